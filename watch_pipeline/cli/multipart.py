"""``watch-pipeline multipart test-regex``: try a multi-part regex on file names."""

from __future__ import annotations

import click

from watch_pipeline.catalog.models import DEFAULT_MULTIPART_REGEX
from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.cli.context import emit_json, safe
from watch_pipeline.pipeline.multipart import MultipartRegexError, compile_part_regex, parse_part


@click.group()
def multipart() -> None:
    """Multi-part recordings (name_P001.mp4, name_P002.mp4, ...)."""


@multipart.command("test-regex")
@click.argument("regex")
@click.argument("filenames", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def test_regex(regex: str, filenames: tuple[str, ...], as_json: bool) -> None:
    r"""Show for each FILENAME whether REGEX matches, and its base, part number and extension.

    REGEX needs exactly three groups: base, part number, extension. The default is
    ^(.+?)_P(\d{3})(\.[^.]+)$ (use "default" to test it).
    """
    pattern = DEFAULT_MULTIPART_REGEX if regex == "default" else regex
    try:
        compiled = compile_part_regex(pattern)
    except MultipartRegexError as exc:
        raise ValidationError("multipart_regex", str(exc)) from None
    results = []
    for name in filenames:
        part = parse_part(compiled, name)
        results.append({"filename": name, "matches": part is not None,
                        "base": part.base if part else None,
                        "part_number": part.part_number if part else None,
                        "extension": part.extension if part else None})
    if as_json:
        emit_json(results)
        return
    for r in results:
        if r["matches"]:
            click.echo(f"{safe(r['filename'])}: part {r['part_number']} of {r['base']!r} "
                       f"({safe(r['extension'])})")
        else:
            click.echo(f"{safe(r['filename'])}: no match (imported as a single file)")
