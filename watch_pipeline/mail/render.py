"""Pure rendering of notification mail: recipients, the scan summary and the test message.

Every value that comes from outside this module (source names, titles, paths, reasons, URLs) is
HTML-escaped before it enters the HTML body, and folded to one line before it enters a subject:
a source named ``<script>alert(1)</script>`` arrives as text, never as markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape

# The recipient rule is the catalog's (its writers validate with it); handed on for notify.
from watch_pipeline.catalog.validation import recipients
from watch_pipeline.mail.base import one_line

__all__ = ["recipients", "render_summary", "render_test_message", "subject_for"]

SUBJECT_PREFIX = "[watch_pipeline]"


def _h(value: object) -> str:
    return escape(str(value), quote=True)


def _link(url: str | None, label: str) -> str:
    """An HTML link when ``url`` is http(s), else the escaped label alone."""
    if url and re.match(r"^https?://", url, re.IGNORECASE):
        return f'<a href="{_h(url)}">{_h(label)}</a>'
    return _h(label)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def subject_for(source_name: str, *, imported: int, stitched: int, errors: int) -> str:
    """E.g. ``[watch_pipeline] Cameras: 2 imported, 1 error``."""
    parts = []
    if imported:
        parts.append(f"{imported} imported")
    if stitched:
        parts.append(f"{stitched} stitched")
    if errors:
        parts.append(_plural(errors, "error"))
    name = one_line(source_name)
    if len(name) > 80:
        name = name[:79] + "…"
    return f"{SUBJECT_PREFIX} {name}: {', '.join(parts) or 'nothing new'}"


def render_summary(
    source_name: str,
    *,
    files_found: int,
    imported: Sequence[tuple[str, str | None]],
    skipped: Mapping[str, int],
    stitched: Sequence[str],
    errors: Sequence[tuple[str, str]],
    dagster_url: str | None = None,
) -> tuple[str, str, str]:
    """The message about one scan (and the imports it started) of one source.

    Args:
        source_name: The watch source's name.
        files_found: Files the scan listed.
        imported: ``(title, run_url)`` per imported media item; ``run_url`` may be ``None``.
        skipped: Skipped files counted by reason (``duplicate_same_source``, ``too_old``, ...).
        stitched: The names of multi-part groups stitched into one recording.
        errors: ``(path, reason)`` per file that failed.
        dagster_url: The Dagster UI, linked at the end when given.

    Returns:
        ``(subject, text, html)``.
    """
    skipped_items = sorted((reason, count) for reason, count in skipped.items() if count)
    skipped_total = sum(count for _, count in skipped_items)
    subject = subject_for(source_name, imported=len(imported), stitched=len(stitched),
                          errors=len(errors))

    text = [f'Scan of watch source "{one_line(source_name)}"', "",
            f"Files found: {files_found}"]
    html = ['<html><body style="font-family: sans-serif">',
            f"<h2>Scan of watch source &quot;{_h(source_name)}&quot;</h2>",
            f"<p>Files found: {files_found}</p>"]

    def section(title: str, count: int, lines: list[str], items: list[str]) -> None:
        text.extend(["", f"{title} ({count}):", *(f"  - {line}" for line in lines)])
        html.append(f"<h3>{_h(title)} ({count})</h3>")
        html.append("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")

    if imported:
        section("Imported", len(imported),
                [f"{one_line(title)} ({url})" if url else one_line(title)
                 for title, url in imported],
                [_link(url, title) for title, url in imported])
    if stitched:
        section("Stitched groups", len(stitched), [one_line(g) for g in stitched],
                [_h(g) for g in stitched])
    if skipped_items:
        section("Skipped", skipped_total,
                [f"{one_line(reason)}: {count}" for reason, count in skipped_items],
                [f"{_h(reason)}: {count}" for reason, count in skipped_items])
    if errors:
        section("Errors", len(errors), [f"{one_line(p)}: {one_line(r)}" for p, r in errors],
                [f"<code>{_h(p)}</code>: {_h(r)}" for p, r in errors])
    if dagster_url:
        text.extend(["", f"Dagster: {dagster_url}"])
        html.append(f"<p>{_link(dagster_url, 'Open Dagster')}</p>")
    html.append("</body></html>")
    return subject, "\n".join(text) + "\n", "\n".join(html) + "\n"


def render_test_message(config_name: str, *, provider: str,
                        description: str) -> tuple[str, str, str]:
    """The message ``watch-pipeline email test`` sends: ``(subject, text, html)``."""
    name = one_line(config_name)
    subject = f"{SUBJECT_PREFIX} test message from email configuration {name[:80]}"
    text = (f'This is a test message from the watch_pipeline email configuration "{name}" '
            f"({provider}, {description}).\nIf you can read it, scan summaries will arrive "
            "here too.\n")
    html = ('<html><body style="font-family: sans-serif">'
            f"<p>This is a test message from the watch_pipeline email configuration "
            f"&quot;{_h(config_name)}&quot; ({_h(provider)}, {_h(description)}).</p>"
            "<p>If you can read it, scan summaries will arrive here too.</p>"
            "</body></html>\n")
    return subject, text, html
