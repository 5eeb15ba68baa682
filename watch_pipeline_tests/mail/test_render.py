"""The summary message and recipient rules (pure, no server)."""

from __future__ import annotations

import pytest

from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.mail.base import EmailMessage
from watch_pipeline.mail.render import recipients, render_summary, render_test_message

EVIL = "<script>alert(1)</script>"


def test_recipients_merged_validated_and_deduplicated_in_order():
    assert recipients(["ops@example.test", "Boss@Example.test"],
                      "boss@example.test, new@example.test; OPS@example.test") == (
        "ops@example.test", "Boss@Example.test", "new@example.test")
    assert recipients(None, None) == ()
    assert recipients("  ", []) == ()


def test_recipients_reject_bad_addresses_naming_the_field():
    with pytest.raises(ValidationError) as info:
        recipients(["ok@example.test"], ["not-an-address"], field="additional_recipients")
    assert info.value.field == "additional_recipients"
    assert "'not-an-address' is not an email address" in info.value.rule
    with pytest.raises(ValidationError):
        recipients(["a@example.test<script>"])


def test_every_interpolated_value_is_escaped_in_html():
    subject, text, html = render_summary(
        EVIL, files_found=5,
        imported=[(f"title {EVIL}", 'http://d.test/runs/1"><script>x</script>'),
                  ("no link", None), ("js", "javascript:alert(1)")],
        skipped={"<b>reason</b>": 1, "too_old": 2, "never": 0},
        stitched=[f"group {EVIL}"], errors=[(f"path/{EVIL}", f"reason {EVIL} & more")],
        dagster_url="http://dagster.test/?a=1&b=<2>")
    assert "<script>" not in html and "<b>reason" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 5
    assert 'href="http://d.test/runs/1&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in html
    assert "javascript:" not in html and "<li>js</li>" in html  # only http(s) becomes a link
    assert "reason &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert 'href="http://dagster.test/?a=1&amp;b=&lt;2&gt;"' in html
    assert "never" not in html  # zero counts are left out
    assert subject == f"[watch_pipeline] {EVIL}: 3 imported, 1 stitched, 1 error"
    assert f'Scan of watch source "{EVIL}"' in text
    assert "Skipped (3):" in text and "  - too_old: 2" in text


def test_summary_text_lists_everything():
    subject, text, _html = render_summary(
        "Cams", files_found=7, imported=[("Board meeting", "http://dagster.test/runs/r1")],
        skipped={"duplicate_same_source": 2}, stitched=["lecture"],
        errors=[("cams/x.mp4", "ffprobe failed")], dagster_url=None)
    assert subject == "[watch_pipeline] Cams: 1 imported, 1 stitched, 1 error"
    for line in ("Files found: 7", "Imported (1):",
                 "  - Board meeting (http://dagster.test/runs/r1)", "Stitched groups (1):",
                 "  - lecture", "  - duplicate_same_source: 2", "Errors (1):",
                 "  - cams/x.mp4: ffprobe failed"):
        assert line in text.splitlines()
    assert "Dagster:" not in text


def test_subject_is_one_line_and_bounded():
    subject, _text, _html = render_summary("a\r\nBcc: x@y.test" + "n" * 300, files_found=0,
                                           imported=[], skipped={}, stitched=[],
                                           errors=[("p", "r"), ("q", "r")])
    assert "\n" not in subject and "\r" not in subject
    assert subject.endswith("…: 2 errors") and len(subject) < 120


def test_test_message_is_escaped():
    subject, text, html = render_test_message(EVIL, provider="smtp",
                                              description="smtp://h:25")
    assert "<script>" not in html and EVIL in text and "\n" not in subject


def test_message_needs_a_recipient():
    with pytest.raises(ValueError, match="recipient"):
        EmailMessage(subject="s", text="t", html="h", to=(), from_address="a@b.test")
