"""``watch-pipeline email ...``: every command, --json, exit codes, real sends, secrets hidden."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from watch_pipeline.cli.main import cli
from watch_pipeline_tests.fixtures.graph_server import (
    M365_CLIENT_ID,
    M365_CLIENT_SECRET,
    M365_TENANT,
)
from watch_pipeline_tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, free_port

EXCHANGE_PASSWORD = "Exch4nge-very-secret"


def _show(run, name: str) -> dict:
    return json.loads(run("email", "show", name, "--json").output)


def _add_all(run, *, smtp_port: int = 2525) -> None:
    run(*("email add --name relay --provider smtp --from watch@example.test --recipients "
          f"ops@example.test,OPS@example.test,boss@example.test --host 127.0.0.1 --port "
          f"{smtp_port} --tls --username {SMTP_USER} --password-stdin").split(),
        input=SMTP_PASSWORD + "\n")
    run(*("email add --name exch --provider exchange --from watch@corp.test --recipients "
          "it@corp.test --server exch.corp.test --port 587 --domain CORP --username svc "
          "--password-stdin").split(), input=EXCHANGE_PASSWORD + "\n")
    run(*(f"email add --name cloud --provider m365 --from alerts@contoso.test --recipients "
          f"ops@contoso.test --tenant-id {M365_TENANT} --client-id {M365_CLIENT_ID} "
          "--client-secret-stdin").split(), input=M365_CLIENT_SECRET + "\n")


def test_add_each_provider_round_trips_through_show_json(run):
    _add_all(run)
    relay = _show(run, "relay")
    assert relay["provider"] == "smtp" and relay["from_address"] == "watch@example.test"
    assert relay["default_recipients"] == ["ops@example.test", "boss@example.test"]
    assert (relay["smtp_host"], relay["smtp_port"], relay["smtp_use_tls"]) == ("127.0.0.1",
                                                                              2525, True)
    assert relay["smtp_username"] == SMTP_USER and relay["has_secret"] is True
    assert relay["smtp_insecure_skip_verify"] is False and relay["is_enabled"] is True
    assert relay["send_failures"] == 0 and relay["links"] == []

    exch = _show(run, "exch")
    assert (exch["exchange_server"], exch["exchange_domain"], exch["exchange_username"]) == (
        "exch.corp.test", "CORP", "svc")
    assert exch["smtp_port"] == 587 and exch["has_secret"] is True

    cloud = _show(run, "3")
    assert (cloud["m365_tenant_id"], cloud["m365_client_id"]) == (M365_TENANT, M365_CLIENT_ID)
    assert cloud["has_secret"] is True and cloud["smtp_port"] is None
    for data in (relay, exch, cloud):
        assert not any(k.startswith("encrypted_") for k in data)


def test_list_show_update_remove(run):
    _add_all(run)
    listing = json.loads(run("email", "list", "--json").output)
    assert [c["name"] for c in listing] == ["relay", "exch", "cloud"]
    text = run("email", "list").output
    assert "relay" in text and "127.0.0.1:2525" in text and "tenant " + M365_TENANT in text
    shown = run("email", "show", "relay").output
    assert "smtp_host" in shown and "has_secret" in shown

    run("email", "update", "relay", "--port", "465", "--disabled", "--insecure-skip-verify",
        "--recipients", "new@example.test")
    relay = _show(run, "relay")
    assert relay["smtp_port"] == 465 and relay["is_enabled"] is False
    assert relay["smtp_insecure_skip_verify"] is True
    assert relay["default_recipients"] == ["new@example.test"]
    run("email", "update", "relay", "--verify-certificate", "--enabled")
    assert _show(run, "relay")["smtp_insecure_skip_verify"] is False

    run("email", "update", "cloud", "--client-secret-stdin", input="rotated-secret\n")
    from watch_pipeline.catalog.db import Catalog, resolve_catalog_url
    from watch_pipeline.catalog.email import email_config_secret, find_email_config
    from watch_pipeline.catalog.keys import active_box
    from watch_pipeline.catalog.secrets import KeyConfig

    catalog = Catalog(resolve_catalog_url(os.environ))
    with catalog.session() as s:
        box = active_box(KeyConfig.from_environ(os.environ))[0]
        assert email_config_secret(box, find_email_config(s, "cloud")) == \
            "rotated-secret"
    catalog.dispose()

    assert "removed email configuration 'exch'" in run("email", "remove", "exch", "--yes").output
    run("email", "show", "exch", code=1)
    assert "not removed" in run("email", "remove", "relay", input="n\n").output


@pytest.mark.parametrize(("args", "field"), [
    (["--provider", "smtp", "--from", "a@b.test", "--host", "h"], "name"),
    (["--name", "x", "--from", "a@b.test", "--host", "h"], "provider"),
    (["--name", "x", "--provider", "smtp", "--host", "h"], "from_address"),
    (["--name", "x", "--provider", "smtp", "--from", "nobody", "--host", "h"], "from_address"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h",
      "--recipients", "ok@b.test,bad"], "default_recipients"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test"], "smtp_host"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h", "--port",
      "0"], "smtp_port"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h", "--port",
      "70000"], "smtp_port"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h",
      "--username", "bob"], "password"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h",
      "--server", "s"], "exchange_server"),
    (["--name", "x", "--provider", "smtp", "--from", "a@b.test", "--host", "h",
      "--client-secret-stdin"], "client-secret"),
    (["--name", "x", "--provider", "exchange", "--from", "a@b.test"], "exchange_server"),
    (["--name", "x", "--provider", "exchange", "--from", "a@b.test", "--server", "s",
      "--host", "h"], "smtp_host"),
    (["--name", "x", "--provider", "exchange", "--from", "a@b.test", "--server", "s",
      "--no-tls"], "smtp_use_tls"),
    (["--name", "x", "--provider", "m365", "--from", "a@b.test", "--client-id", "c",
      "--client-secret-stdin"], "m365_tenant_id"),
    (["--name", "x", "--provider", "m365", "--from", "a@b.test", "--tenant-id", "t",
      "--client-id", "c"], "client-secret"),
    (["--name", "x", "--provider", "m365", "--from", "a@b.test", "--tenant-id", "t",
      "--client-id", "c", "--username", "u"], "username"),
    (["--name", "x", "--provider", "m365", "--from", "a@b.test", "--tenant-id", "t",
      "--client-id", "c", "--password-stdin"], "password"),
])
def test_every_validation_rule_exits_2_naming_the_field(run, args, field):
    result = run("email", "add", *args, input="some-secret\n", code=2)
    assert f"invalid {field}" in result.stderr
    assert json.loads(run("email", "list", "--json").output) == []


def test_bad_choices_and_update_rules_exit_2(run):
    run("email", "add", "--name", "x", "--provider", "sendgrid", "--from", "a@b.test", code=2)
    _add_all(run)
    assert "cannot be changed" in run("email", "update", "relay", "--provider", "m365",
                                      code=2).stderr
    assert "unique" in run("email", "update", "relay", "--name", "exch", code=2).stderr
    assert "nothing to update" in run("email", "update", "relay", code=2).stderr
    assert "no email configuration" in run("email", "update", "ghost", "--disabled",
                                           code=1).stderr


def test_secrets_never_in_output_or_database_bytes(run, dagster_home):
    _add_all(run)
    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    run("email", "link", "relay", "--source", "cams")
    outputs = [run("email", "list").output, run("email", "list", "--json").output]
    for name in ("relay", "exch", "cloud"):
        outputs += [run("email", "show", name).output,
                    run("email", "show", name, "--json").output]
    for out in outputs:
        for secret in (SMTP_PASSWORD, EXCHANGE_PASSWORD, M365_CLIENT_SECRET):
            assert secret not in out
    blob = b"".join(p.read_bytes() for p in Path(dagster_home).glob("watch_catalog.sqlite*"))
    assert blob
    for secret in (SMTP_PASSWORD, EXCHANGE_PASSWORD, M365_CLIENT_SECRET):
        assert secret.encode() not in blob


def test_secret_is_never_read_from_argv():
    result = CliRunner().invoke(cli, ["email", "add", "--password", "x"])
    assert result.exit_code == 2  # no such option


def test_link_show_relink_unlink(run):
    _add_all(run)
    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    out = run("email", "link", "relay", "--source", "cams", "--recipients",
              "extra@example.test,OPS@example.test", "--no-success").output
    assert "mail on error to ops@example.test, boss@example.test, extra@example.test" in out
    [link] = _show(run, "relay")["links"]
    assert link == {"watch_source_id": 1, "source_name": "cams", "email_config_id": 1,
                    "email_config_name": "relay",
                    "additional_recipients": ["extra@example.test", "OPS@example.test"],
                    "notify_on_success": False, "notify_on_error": True}
    assert "source 'cams' on error" in run("email", "show", "relay").output

    run("email", "link", "relay", "--source", "1")  # again: replaces the settings
    [link] = _show(run, "relay")["links"]
    assert link["additional_recipients"] == [] and link["notify_on_success"] is True
    assert json.loads(run("email", "list", "--json").output)[0]["links"] == [link]

    warned = run("email", "link", "relay", "--source", "cams", "--no-success", "--no-error")
    assert "never sends" in warned.stderr

    assert "invalid additional_recipients" in run(
        "email", "link", "relay", "--source", "cams", "--recipients", "x@", code=2).stderr
    assert "no watch source" in run("email", "link", "relay", "--source", "ghost",
                                    code=1).stderr
    run("email", "unlink", "relay", "--source", "cams")
    assert _show(run, "relay")["links"] == []
    assert "not linked" in run("email", "unlink", "relay", "--source", "cams", code=1).stderr

    run("email", "link", "exch", "--source", "cams")
    run("source", "remove", "cams", "--yes")
    assert _show(run, "exch")["links"] == []


def test_link_without_any_recipient_warns(run):
    run("email", "add", "--name", "bare", "--provider", "smtp", "--from", "a@b.test",
        "--host", "h")
    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    result = run("email", "link", "bare", "--source", "cams")
    assert "to nobody" in result.output and "no recipients" in result.stderr


def test_email_test_smtp_success_records_ok(run, smtp_starttls_server, tls_files,
                                            monkeypatch):
    monkeypatch.setenv("WATCH_SMTP_CA_FILE", tls_files.ca_file)
    _add_all(run, smtp_port=smtp_starttls_server.port)
    out = run("email", "test", "relay", "--to", "me@example.test").output
    assert "OK, test message sent to me@example.test" in out
    [mail] = smtp_starttls_server.messages
    assert mail.rcpt_tos == ("me@example.test",) and mail.tls and mail.login == SMTP_USER
    assert "test message from email configuration relay" in mail.message["Subject"]
    data = _show(run, "relay")
    assert data["test_status"] == "ok" and data["last_tested_at"]
    assert data["test_message"] == "test message sent to me@example.test"

    run("email", "test", "relay")  # default recipients
    assert smtp_starttls_server.messages[-1].rcpt_tos == ("ops@example.test",
                                                           "boss@example.test")


def test_email_test_wrong_password_exits_1_and_records_the_reason(run, smtp_starttls_server,
                                                                   tls_files, monkeypatch):
    monkeypatch.setenv("WATCH_SMTP_CA_FILE", tls_files.ca_file)
    _add_all(run, smtp_port=smtp_starttls_server.port)
    run("email", "update", "relay", "--password-stdin", input="wrong-password-555\n")
    result = run("email", "test", "relay", "--to", "me@example.test", code=1)
    assert "SMTP login refused for user mailer on 127.0.0.1:" in result.stderr
    assert "wrong-password-555" not in result.stderr + result.output
    data = _show(run, "relay")
    assert data["test_status"] == "error" and "login refused" in data["test_message"]
    assert "wrong-password-555" not in data["test_message"]
    assert smtp_starttls_server.messages == []


def test_email_test_untrusted_certificate_without_ca_file(run, smtp_starttls_server,
                                                         monkeypatch):
    monkeypatch.delenv("WATCH_SMTP_CA_FILE", raising=False)
    _add_all(run, smtp_port=smtp_starttls_server.port)
    result = run("email", "test", "relay", "--to", "me@example.test", code=1)
    assert "TLS certificate of 127.0.0.1" in result.stderr
    run("email", "update", "relay", "--insecure-skip-verify")
    run("email", "test", "relay", "--to", "me@example.test")
    assert _show(run, "relay")["test_status"] == "ok"


def test_email_test_refused_connection_exits_1(run):
    _add_all(run, smtp_port=free_port())
    result = run("email", "test", "relay", code=1)
    assert "cannot reach SMTP server 127.0.0.1:" in result.stderr
    data = _show(run, "relay")
    assert data["test_status"] == "error" and "cannot reach" in data["test_message"]


def test_email_test_m365(run, fake_m365, monkeypatch):
    monkeypatch.setenv("WATCH_GRAPH_BASE_URL", fake_m365.graph_base)
    monkeypatch.setenv("WATCH_M365_AUTHORITY_BASE_URL", fake_m365.authority_base)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_m365.ca_file)
    _add_all(run)
    out = run("email", "test", "cloud", "--to", "me@contoso.test,you@contoso.test").output
    assert "OK, test message sent to me@contoso.test, you@contoso.test" in out
    [request] = fake_m365.send_requests
    assert request.path == "/v1.0/users/alerts@contoso.test/sendMail"
    body = request.json()
    assert body["message"]["toRecipients"] == [{"emailAddress": {"address": "me@contoso.test"}},
                                               {"emailAddress": {"address": "you@contoso.test"}}]
    assert "cloud" in body["message"]["subject"] and body["saveToSentItems"] is False
    assert _show(run, "cloud")["test_status"] == "ok"

    fake_m365.fail_next(403, code="ErrorAccessDenied", message="Access is denied.")
    result = run("email", "test", "cloud", code=1)
    assert "Mail.Send" in result.stderr and M365_CLIENT_SECRET not in result.stderr
    assert _show(run, "cloud")["test_status"] == "error"


def test_email_test_needs_a_recipient(run):
    run("email", "add", "--name", "bare", "--provider", "smtp", "--from", "a@b.test",
        "--host", "h")
    assert "invalid to" in run("email", "test", "bare", code=2).stderr
    assert "invalid to" in run("email", "test", "bare", "--to", "nope", code=2).stderr
