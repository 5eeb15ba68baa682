"""``email add/update --allow-insecure-auth`` and ``email test``: no login in clear unless allowed;
a missing key while secrets exist is refused with the key id (issue 13, findings 3 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watch_pipeline.catalog.secrets import KEY_FILENAME
from watch_pipeline_tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER


def _add_clear_relay(run, port: int, *extra: str):
    return run("email", "add", "--name", "relay", "--provider", "smtp", "--from",
               "watch@example.test", "--recipients", "ops@example.test", "--host", "127.0.0.1",
               "--port", str(port), "--no-tls", "--username", SMTP_USER, "--password-stdin",
               *extra, input=SMTP_PASSWORD + "\n")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_in_clear_needs_allow_insecure_auth_and_says_so(run, start_smtp_server):
    server = start_smtp_server(auth=True)  # offers AUTH without TLS
    added = _add_clear_relay(run, server.port)
    assert "TLS is off: nothing will be sent" in added.stderr
    result = run("email", "test", "relay", code=1)
    assert "without TLS" in result.stderr and "--allow-insecure-auth" in result.stderr
    assert SMTP_PASSWORD not in result.stderr + result.output
    assert server.messages == []
    shown = json.loads(run("email", "show", "relay", "--json").output)
    assert shown["smtp_allow_insecure_auth"] is False and shown["test_status"] == "error"

    updated = run("email", "update", "relay", "--allow-insecure-auth")
    assert "warning:" in updated.stderr and "without TLS" in updated.stderr
    assert "warning" not in updated.stdout  # the warning goes to stderr only
    run("email", "test", "relay")
    [mail] = server.messages
    assert mail.login == SMTP_USER and not mail.tls
    assert json.loads(run("email", "show", "relay", "--json").output)[
        "smtp_allow_insecure_auth"] is True

    run("email", "update", "relay", "--no-allow-insecure-auth")
    run("email", "test", "relay", code=1)
    assert len(server.messages) == 1


def test_allow_insecure_auth_at_add_warns_on_stderr(run, start_smtp_server):
    result = _add_clear_relay(run, 2525, "--allow-insecure-auth")
    assert "may send its username and password without TLS" in result.stderr


def test_a_new_secret_is_refused_when_the_catalogs_key_is_missing(run, dagster_home):
    run("email", "add", "--name", "first", "--provider", "smtp", "--from", "w@example.test",
        "--host", "127.0.0.1", "--username", "u", "--password-stdin", input="pw-1\n")
    key_file = Path(dagster_home) / KEY_FILENAME
    key_id = json.loads(run("email", "show", "first", "--json").output)["id"]
    assert key_id  # the row exists, its password encrypted with the key file's key
    from watch_pipeline.catalog.secrets import SecretBox, read_key_file

    needed = SecretBox(read_key_file(key_file)).key_id
    key_file.unlink()
    result = run("email", "add", "--name", "second", "--provider", "smtp", "--from",
                 "w@example.test", "--host", "127.0.0.1", "--username", "u",
                 "--password-stdin", input="pw-2\n", code=1)
    assert f"encrypted with key {needed}" in result.stderr and str(key_file) in result.stderr
    assert not key_file.exists()  # no second key was created
    assert "second" not in run("email", "list").output
