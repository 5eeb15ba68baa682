"""A messy, hostile watch folder on two local sources: good recordings are imported exactly
once, every bad entry is recorded with a specific reason, and no tick ever fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import sqlalchemy as sa

from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline_tests.defs.harness import add_source, age, run_request, tick

GOOD = {"good1.wav": 300, "good2.wav": 400, "good3.wav": 500,
        "$(touch pwned) `touch pwned2`.wav": 600, "<b>html<i> & \x1b[31mred.wav": 700}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _tone(path: Path, freq: int, seconds: float = 0.5) -> None:
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}", str(path))


def _deep_path(root: Path) -> None:
    """A file below a path longer than PATH_MAX (built with dir fds: no path could name it)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            nxt = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with os.fdopen(os.open("deep.wav", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd),
                       "wb") as fh:
            fh.write(b"RIFF")
    finally:
        os.close(fd)


def _hostile_folder(folder: Path, media: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, freq in GOOD.items():
        shutil.copy(media / f"{freq}.wav", folder / name)
    shutil.copy(media / "300.wav", folder / ("n" * 240 + ".wav"))  # a long name, same content
    with open(os.path.join(os.fsencode(folder), b"caf\xe9 latin1.wav"), "wb") as fh:
        fh.write((media / "400.wav").read_bytes())  # not UTF-8: cannot be named safely
    os.symlink("loop_b.wav", folder / "loop_a.wav")
    os.symlink("loop_a.wav", folder / "loop_b.wav")
    os.symlink("/etc/passwd", folder / "passwd.wav")
    os.symlink("/etc", folder / "etc")
    (folder / "empty.wav").touch()
    (folder / "notes.mp4").write_text("<html>not a recording</html>\n")
    (folder / "line\nbreak.wav").write_bytes((media / "500.wav").read_bytes())
    whole = (media / "clip.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    shutil.copy(media / "bomb.flac", folder / "bomb.flac")
    _deep_path(folder)
    for path in folder.iterdir():
        if not path.is_symlink():
            age(path)


def _media(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    for freq in sorted(set(GOOD.values())):
        _tone(media / f"{freq}.wav", freq)
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=3", "-f", "lavfi",
            "-i", "sine=frequency=900:duration=3", "-c:v", "libx264", "-c:a", "aac",
            "-movflags", "+faststart", str(media / "clip.mp4"))
    # 31 minutes of silence in a few hundred KB: a decompression bomb for a 0.25 h limit
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "1860", "-c:a", "flac",
            str(media / "bomb.flac"))
    return media


def _drain(env, ticks: int = 6) -> list[str]:
    """Tick the local sensor and run what it asks for until nothing is left to do."""
    skips = []
    for _ in range(ticks):
        requests, skip = tick(env)  # a failing tick raises here
        if skip:
            skips.append(skip)
        for request in requests:
            run_request(env, request)
        if not requests:
            break
    return skips


def test_hostile_folder_on_two_sources(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where `$(touch pwned)` would land if a shell ever ran it
    media = _media(tmp_path)
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 30)
        set_setting(s, "watch.max_media_duration_hours", 0.25)
    for name in ("a", "b"):
        _hostile_folder(env["watch"] / name, media)
        add_source(env, name=name, path=name, auto_transcribe=False,
                   skip_files_older_than_days=None)

    _drain(env)

    with env["catalog"].session() as s:
        media_rows = s.scalars(sa.select(MediaFile)).all()
        rows = s.execute(sa.select(WatchSource.name, WatchSourceFile)
                         .join(WatchSource)).tuples().all()
        sources = {src.name: src for src in s.scalars(sa.select(WatchSource))}
    # every good recording exactly once, whatever its name, from whichever source came first
    assert len(media_rows) == len({m.imohash for m in media_rows}) == len(GOOD)
    names = {m.filename for m in media_rows}
    assert set(GOOD) - {"good1.wav"} <= names  # good1's content may come under its long twin name
    assert all(m.status == "completed" and m.object_key for m in media_rows)
    by_reason: dict[tuple[str, str | None], int] = {}
    for source_name, row in rows:
        # nothing is left undecided, and every problem says what it is
        assert row.status in ("imported", "skipped_duplicate", "skipped_invalid", "error"), \
            (row.remote_path, row.status)
        if row.status != "imported":
            assert row.error_message, (row.remote_path, row.status)
        by_reason[(source_name, row.skip_reason)] = by_reason.get(
            (source_name, row.skip_reason), 0) + 1
    for name in ("a", "b"):
        assert sources[name].last_scan_status == "success", sources[name].last_scan_message
        for reason in ("unreadable_name", "symlink_loop", "outside_root", "path_too_long",
                       "validation_failed", "invalid_type", "too_long"):
            assert by_reason.get((name, reason)), (name, reason, by_reason)
    # source b found only copies of what a imported
    b_imported = [r for n, r in rows if n == "b" and r.status == "imported"]
    assert b_imported == []
    assert by_reason[("b", "duplicate_other_source")] >= len(GOOD)
    truncated = [r for _, r in rows if r.remote_path == "truncated.mp4"]
    assert all(r.status in ("error", "skipped_invalid") for r in truncated)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
