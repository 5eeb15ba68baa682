"""SMTP and Exchange delivery against a real aiosmtpd server on loopback."""

from __future__ import annotations

import base64
import socket
import time

import pytest

from watch_pipeline.mail.base import EmailMessage, MailError
from watch_pipeline.mail.render import render_summary
from watch_pipeline.mail.smtp import ExchangeMailer, SmtpMailer
from watch_pipeline_tests.fixtures.smtp_server import (
    REJECTED_DOMAIN,
    SMTP_PASSWORD,
    SMTP_USER,
    free_port,
)

SENDER = "watch@example.test"
EVIL = "<script>alert(1)</script>"


def _message(to=("ops@example.test",), name=EVIL) -> EmailMessage:
    subject, text, html = render_summary(
        name, files_found=4, imported=[("Board <meeting>", "http://dagster.test/runs/1?a=1&b=2")],
        skipped={"too_old": 2}, stitched=[], errors=[("cams/bad.mp4", "ffprobe: <garbage>")])
    return EmailMessage(subject=subject, text=text, html=html, to=to, from_address=SENDER)


def test_plain_delivery_with_right_recipients_subject_and_escaped_html(smtp_server):
    mailer = SmtpMailer(smtp_server.host, smtp_server.port, use_tls=False)
    mailer.send(_message(to=("ops@example.test", "boss@example.test")))

    [mail] = smtp_server.messages
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == ("ops@example.test", "boss@example.test")
    assert mail.message["Subject"] == f"[watch_pipeline] {EVIL}: 1 imported, 1 error"
    assert mail.message["To"] == "ops@example.test, boss@example.test"
    assert mail.message.get_content_type() == "multipart/alternative"
    html = mail.part("html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "Board &lt;meeting&gt;" in html and "ffprobe: &lt;garbage&gt;" in html
    assert 'href="http://dagster.test/runs/1?a=1&amp;b=2"' in html
    text = mail.part("plain")
    assert EVIL in text and "Board <meeting>" in text  # plain text is not HTML: no escaping
    assert not mail.tls and mail.login is None


def test_starttls_and_auth(smtp_starttls_server, tls_files):
    mailer = SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port,
                        username=SMTP_USER, password=SMTP_PASSWORD, ca_file=tls_files.ca_file)
    mailer.send(_message())
    [mail] = smtp_starttls_server.messages
    assert mail.tls and mail.login == SMTP_USER
    assert mail.rcpt_tos == ("ops@example.test",)


def test_test_logs_in_and_sends_nothing(smtp_starttls_server, tls_files):
    SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port, username=SMTP_USER,
               password=SMTP_PASSWORD, ca_file=tls_files.ca_file).test()
    assert smtp_starttls_server.messages == []


def test_wrong_password_is_a_clear_error_without_the_password(smtp_starttls_server, tls_files):
    wrong = "not-the-password-987"
    mailer = SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port,
                        username=SMTP_USER, password=wrong, ca_file=tls_files.ca_file)
    with pytest.raises(MailError) as info:
        mailer.send(_message())
    text = str(info.value)
    where = f"{smtp_starttls_server.host}:{smtp_starttls_server.port}"
    assert text.startswith(f"SMTP login refused for user {SMTP_USER} on {where}")
    assert "535" in text
    assert wrong not in text and SMTP_PASSWORD not in text
    assert wrong not in repr(mailer)
    assert smtp_starttls_server.messages == []


def test_refused_connection():
    port = free_port()
    with pytest.raises(MailError) as info:
        SmtpMailer("127.0.0.1", port, timeout=5).send(_message())
    assert str(info.value).startswith(f"cannot reach SMTP server 127.0.0.1:{port}: ")
    assert "refused" in str(info.value).lower()


def test_timeout_when_the_server_never_greets():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts into the backlog, never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(MailError) as info:
            SmtpMailer("127.0.0.1", port, timeout=0.5).send(_message())
    assert time.monotonic() - started < 10
    assert str(info.value) == f"cannot reach SMTP server 127.0.0.1:{port}: timed out after 0.5 s"


def test_untrusted_certificate_is_a_tls_error(smtp_starttls_server):
    mailer = SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port,
                        username=SMTP_USER, password=SMTP_PASSWORD)
    with pytest.raises(MailError) as info:
        mailer.send(_message())
    assert str(info.value).startswith("TLS certificate of 127.0.0.1:")
    assert "not trusted" in str(info.value)


def test_insecure_skip_verify_accepts_the_unknown_certificate(smtp_starttls_server):
    SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port, username=SMTP_USER,
               password=SMTP_PASSWORD, insecure_skip_verify=True).send(_message())
    assert len(smtp_starttls_server.messages) == 1


def test_server_without_starttls_is_refused_when_tls_is_on(smtp_server):
    with pytest.raises(MailError) as info:
        SmtpMailer(smtp_server.host, smtp_server.port).send(_message())
    assert "does not offer STARTTLS" in str(info.value) and str(info.value).startswith("TLS")
    assert smtp_server.messages == []


def test_no_tls_against_a_server_requiring_it(smtp_starttls_server):
    with pytest.raises(MailError) as info:
        SmtpMailer(smtp_starttls_server.host, smtp_starttls_server.port,
                   use_tls=False).send(_message())
    assert "530" in str(info.value) and "STARTTLS" in str(info.value)


def test_username_against_a_server_without_auth(smtp_server):
    with pytest.raises(MailError) as info:
        SmtpMailer(smtp_server.host, smtp_server.port, use_tls=False, username="u",
                   password="p", allow_insecure_auth=True).send(_message())
    assert "offers no AUTH" in str(info.value)


def _password_on_the_wire(tap) -> bool:
    """Whether the password crossed the tap readable (AUTH PLAIN/LOGIN carry it in base64)."""
    wire = tap.client_bytes
    plain = base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode())
    return (SMTP_PASSWORD.encode() in wire or plain in wire
            or base64.b64encode(SMTP_PASSWORD.encode()) in wire)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_clear_auth_is_refused_without_the_operators_consent(start_smtp_server, wiretap):
    server = start_smtp_server(auth=True)  # offers AUTH without TLS, like a careless relay
    tap = wiretap(server.host, server.port)
    mailer = SmtpMailer(tap.host, tap.port, use_tls=False, username=SMTP_USER,
                        password=SMTP_PASSWORD)
    for attempt in (mailer.test, lambda: mailer.send(_message())):
        with pytest.raises(MailError) as info:
            attempt()
        message = str(info.value)
        assert "without TLS" in message and "--allow-insecure-auth" in message
        assert SMTP_USER in message and SMTP_PASSWORD not in message
    assert tap.connections == 0 and tap.client_bytes == b""  # refused before connecting
    assert server.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_clear_auth_goes_through_when_the_operator_allowed_it(start_smtp_server, wiretap):
    server = start_smtp_server(auth=True)
    tap = wiretap(server.host, server.port)
    SmtpMailer(tap.host, tap.port, use_tls=False, username=SMTP_USER, password=SMTP_PASSWORD,
               allow_insecure_auth=True).send(_message())
    [mail] = server.messages
    assert mail.login == SMTP_USER and not mail.tls
    assert b"AUTH " in tap.client_bytes and _password_on_the_wire(tap)  # what was accepted


def test_starttls_hides_the_login_from_the_wire(smtp_starttls_server, tls_files, wiretap):
    tap = wiretap(smtp_starttls_server.host, smtp_starttls_server.port)
    SmtpMailer(tap.host, tap.port, username=SMTP_USER, password=SMTP_PASSWORD,
               ca_file=tls_files.ca_file).send(_message())
    assert smtp_starttls_server.messages[0].login == SMTP_USER
    assert b"STARTTLS" in tap.client_bytes and b"AUTH " not in tap.client_bytes
    assert not _password_on_the_wire(tap)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_tls_requested_but_not_offered_never_falls_back_to_clear(start_smtp_server, wiretap):
    server = start_smtp_server(auth=True)  # no STARTTLS at all, AUTH in clear offered
    tap = wiretap(server.host, server.port)
    with pytest.raises(MailError) as info:
        SmtpMailer(tap.host, tap.port, username=SMTP_USER, password=SMTP_PASSWORD,
                   allow_insecure_auth=True).send(_message())
    assert str(info.value).startswith("TLS:") and "does not offer STARTTLS" in str(info.value)
    assert b"AUTH " not in tap.client_bytes and not _password_on_the_wire(tap)
    assert server.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls(start_smtp_server, tls_files):
    server = start_smtp_server(implicit_tls=True, auth=True)
    mailer = SmtpMailer(server.host, server.port, implicit_tls=True, username=SMTP_USER,
                        password=SMTP_PASSWORD, ca_file=tls_files.ca_file)
    assert mailer.description.startswith("smtps://")
    mailer.send(_message())
    [mail] = server.messages
    assert mail.tls and mail.login == SMTP_USER


def test_port_465_means_implicit_tls_and_other_ports_starttls():
    assert SmtpMailer("mail.example", 465, use_tls=False).implicit_tls is True
    assert SmtpMailer("mail.example", 465, use_tls=False).use_tls is True
    assert SmtpMailer("mail.example", 587).implicit_tls is False
    assert SmtpMailer("mail.example", 587).description == "smtp+starttls://mail.example:587"
    assert SmtpMailer("mail.example", 25, use_tls=False).description == "smtp://mail.example:25"


def test_every_recipient_refused(smtp_server):
    with pytest.raises(MailError) as info:
        SmtpMailer(smtp_server.host, smtp_server.port, use_tls=False).send(
            _message(to=(f"nobody@{REJECTED_DOMAIN}",)))
    assert "refused every recipient" in str(info.value)
    assert f"nobody@{REJECTED_DOMAIN} (550" in str(info.value)


def test_some_recipients_refused(smtp_server):
    with pytest.raises(MailError) as info:
        SmtpMailer(smtp_server.host, smtp_server.port, use_tls=False).send(
            _message(to=("ops@example.test", f"nobody@{REJECTED_DOMAIN}")))
    assert "refused some recipients" in str(info.value)
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ("ops@example.test",)


def test_exchange_logs_in_as_domain_backslash_user_over_tls(start_smtp_server, tls_files):
    server = start_smtp_server(starttls=True, auth=True, username="CORP\\svc-mail",
                               password=SMTP_PASSWORD)
    mailer = ExchangeMailer(server.host, server.port, username="svc-mail",
                            password=SMTP_PASSWORD, domain="CORP", ca_file=tls_files.ca_file)
    assert mailer.use_tls and mailer.login_user == "CORP\\svc-mail"
    mailer.send(_message())
    [mail] = server.messages
    assert mail.tls and mail.login == "CORP\\svc-mail"


def test_exchange_always_uses_tls(smtp_server):
    with pytest.raises(MailError) as info:
        ExchangeMailer(smtp_server.host, smtp_server.port).send(_message())
    assert "does not offer STARTTLS" in str(info.value)


def test_subject_line_breaks_are_folded(smtp_server):
    message = EmailMessage(subject="a\r\nBcc: victim@example.test", text="t", html="<p>t</p>",
                           to=("ops@example.test",), from_address=SENDER)
    SmtpMailer(smtp_server.host, smtp_server.port, use_tls=False).send(message)
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == "a Bcc: victim@example.test"
    assert mail.message["Bcc"] is None and mail.rcpt_tos == ("ops@example.test",)
