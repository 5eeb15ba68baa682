"""Microsoft 365 delivery against a local stand-in for the login endpoint and Graph."""

from __future__ import annotations

import pytest

from watch_pipeline.mail.base import EmailMessage, MailError
from watch_pipeline.mail.graph import GraphMailer
from watch_pipeline.mail.render import render_summary
from watch_pipeline_tests.fixtures.graph_server import (
    M365_CLIENT_ID,
    M365_CLIENT_SECRET,
    M365_TENANT,
)

SENDER = "alerts@contoso.test"


def _mailer(fake, *, secret=M365_CLIENT_SECRET, waits=None, **kwargs) -> GraphMailer:
    return GraphMailer(M365_TENANT, M365_CLIENT_ID, secret, SENDER,
                       authority_base=fake.authority_base, graph_base=fake.graph_base,
                       verify=fake.ca_file, timeout=10, backoff=0.25,
                       sleep=(waits.append if waits is not None else lambda _s: None), **kwargs)


def _message(name="<script>alert(1)</script>", to=("ops@contoso.test",)) -> EmailMessage:
    subject, text, html = render_summary(name, files_found=2, imported=[("Talk <1>", None)],
                                         skipped={}, stitched=[], errors=[])
    return EmailMessage(subject=subject, text=text, html=html, to=to, from_address=SENDER)


def _no_secret_in(text: str, fake) -> None:
    assert M365_CLIENT_SECRET not in text
    for token in fake.tokens:
        assert token not in text
    assert "at-" not in text


def test_sends_the_message_json_with_a_token_acquired_once(fake_m365):
    mailer = _mailer(fake_m365)
    mailer.send(_message(to=("ops@contoso.test", "boss@contoso.test")))
    mailer.send(_message(name="second"))

    assert len(fake_m365.token_requests) == 1  # the second send used MSAL's cached token
    form = fake_m365.token_requests[0].form()
    assert form["grant_type"] == "client_credentials"
    assert form["scope"].split() == ["https://graph.microsoft.com/.default"]
    assert form["client_id"] == M365_CLIENT_ID

    first, second = fake_m365.send_requests
    assert first.path == f"/v1.0/users/{SENDER}/sendMail"
    assert first.headers["Authorization"] == second.headers["Authorization"]
    body = first.json()
    assert body["saveToSentItems"] is False
    msg = body["message"]
    assert msg["subject"] == "[watch_pipeline] <script>alert(1)</script>: 1 imported"
    assert msg["body"]["contentType"] == "HTML"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in msg["body"]["content"]
    assert "<script>" not in msg["body"]["content"]
    assert "Talk &lt;1&gt;" in msg["body"]["content"]
    assert msg["toRecipients"] == [{"emailAddress": {"address": "ops@contoso.test"}},
                                   {"emailAddress": {"address": "boss@contoso.test"}}]


def test_test_acquires_a_token_and_sends_nothing(fake_m365):
    _mailer(fake_m365).test()
    assert len(fake_m365.token_requests) == 1 and fake_m365.send_requests == []


def test_401_refreshes_the_token_once(fake_m365):
    mailer = _mailer(fake_m365)
    mailer.send(_message())
    fake_m365.revoke_tokens()  # the cached token is no longer accepted
    mailer.send(_message())
    assert len(fake_m365.token_requests) == 2
    assert len(fake_m365.send_requests) == 3


def test_persistent_401_is_a_clear_error(fake_m365):
    fake_m365.reject_all_tokens = True
    mailer = _mailer(fake_m365)
    with pytest.raises(MailError) as info:
        mailer.send(_message())
    text = str(info.value)
    assert "refused the access token" in text and "HTTP 401" in text and SENDER in text
    assert len(fake_m365.token_requests) == 2 and len(fake_m365.send_requests) == 2
    _no_secret_in(text, fake_m365)


def test_429_honours_retry_after(fake_m365):
    waits: list[float] = []
    fake_m365.fail_next(429, retry_after=2, code="ApplicationThrottled")
    _mailer(fake_m365, waits=waits).send(_message())
    assert waits == [2.0]
    assert len(fake_m365.send_requests) == 2


def test_429_with_a_real_wait(fake_m365):
    import time

    fake_m365.fail_next(429, retry_after=1)
    mailer = GraphMailer(M365_TENANT, M365_CLIENT_ID, M365_CLIENT_SECRET, SENDER,
                         authority_base=fake_m365.authority_base,
                         graph_base=fake_m365.graph_base, verify=fake_m365.ca_file)
    started = time.monotonic()
    mailer.send(_message())
    assert time.monotonic() - started >= 1.0
    assert len(fake_m365.send_requests) == 2


def test_429_beyond_the_bound_fails_without_waiting(fake_m365):
    waits: list[float] = []
    fake_m365.fail_next(429, retry_after=3600)
    with pytest.raises(MailError) as info:
        _mailer(fake_m365, waits=waits, max_retry_after=30).send(_message())
    assert "Retry-After 3600 s exceeds the 30 s" in str(info.value)
    assert waits == []


def test_429_forever_gives_up_after_max_retries(fake_m365):
    waits: list[float] = []
    fake_m365.fail_next(429, retry_after=1, count=10)
    with pytest.raises(MailError) as info:
        _mailer(fake_m365, waits=waits, max_retries=2).send(_message())
    assert "kept throttling" in str(info.value) and "after 2 retries" in str(info.value)
    assert waits == [1.0, 1.0] and len(fake_m365.send_requests) == 3


def test_500_is_retried_with_backoff(fake_m365):
    waits: list[float] = []
    fake_m365.fail_next(500, count=2)
    _mailer(fake_m365, waits=waits).send(_message())
    assert waits == [0.25, 0.5]
    assert len(fake_m365.send_requests) == 3


def test_500_forever_is_a_bounded_error(fake_m365):
    waits: list[float] = []
    fake_m365.fail_next(503, count=10, code="ServiceUnavailable", message="try later")
    with pytest.raises(MailError) as info:
        _mailer(fake_m365, waits=waits, max_retries=3).send(_message())
    text = str(info.value)
    assert "HTTP 503 after 3 retries" in text and "ServiceUnavailable: try later" in text
    assert len(fake_m365.send_requests) == 4 and len(waits) == 3
    _no_secret_in(text, fake_m365)


def test_403_names_the_missing_permission(fake_m365):
    fake_m365.fail_next(403, code="ErrorAccessDenied", message="Access is denied.")
    with pytest.raises(MailError) as info:
        _mailer(fake_m365).send(_message())
    assert "Mail.Send" in str(info.value) and "ErrorAccessDenied" in str(info.value)
    assert len(fake_m365.send_requests) == 1


def test_wrong_client_secret_is_a_clear_error_without_the_secret(fake_m365):
    wrong = "wrong-secret-value-123"
    with pytest.raises(MailError) as info:
        _mailer(fake_m365, secret=wrong).send(_message())
    text = str(info.value)
    assert "refused a token" in text and "invalid_client" in text and M365_CLIENT_ID in text
    assert wrong not in text and "Trace ID" not in text
    assert fake_m365.send_requests == []


def test_unknown_tenant_is_a_clear_error(fake_m365):
    mailer = GraphMailer("other-tenant", M365_CLIENT_ID, M365_CLIENT_SECRET, SENDER,
                         authority_base=fake_m365.authority_base,
                         graph_base=fake_m365.graph_base, verify=fake_m365.ca_file)
    with pytest.raises(MailError) as info:
        mailer.test()
    assert "other-tenant" in str(info.value) and "not usable" in str(info.value)


def test_untrusted_certificate_is_a_tls_error(fake_m365):
    mailer = GraphMailer(M365_TENANT, M365_CLIENT_ID, M365_CLIENT_SECRET, SENDER,
                         authority_base=fake_m365.authority_base,
                         graph_base=fake_m365.graph_base, timeout=5)
    with pytest.raises(MailError) as info:
        mailer.test()
    assert "TLS" in str(info.value)
    assert M365_CLIENT_SECRET not in str(info.value)


def test_unreachable_login_endpoint():
    from watch_pipeline_tests.fixtures.smtp_server import free_port

    port = free_port()
    mailer = GraphMailer(M365_TENANT, M365_CLIENT_ID, M365_CLIENT_SECRET, SENDER,
                         authority_base=f"https://127.0.0.1:{port}",
                         graph_base=f"https://127.0.0.1:{port}/v1.0", timeout=5)
    with pytest.raises(MailError) as info:
        mailer.send(_message())
    assert "cannot reach the Microsoft 365 login endpoint" in str(info.value)


def test_repr_and_description_hold_no_secret():
    mailer = GraphMailer(M365_TENANT, M365_CLIENT_ID, M365_CLIENT_SECRET, SENDER)
    assert M365_CLIENT_SECRET not in repr(mailer) and SENDER in mailer.description
