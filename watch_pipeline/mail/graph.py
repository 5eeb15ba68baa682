"""Microsoft 365: an MSAL client-credentials token, then Microsoft Graph ``sendMail``.

The app registration needs the ``Mail.Send`` application permission. The token comes from
``{authority_base}/{tenant_id}`` with the scope ``https://graph.microsoft.com/.default`` and stays
in MSAL's in-memory cache until it expires, so a mailer reused across sends asks the login
endpoint once. Both base URLs are parameters (sovereign clouds; tests point them at a local
HTTPS server: MSAL accepts only ``https`` authorities).

Graph answers: 202 delivered; 401 → the cached token is dropped and a new one fetched once;
429 → wait ``Retry-After`` seconds (bounded) and retry; 5xx or a dropped connection → bounded
retries with exponential backoff. No message raised here contains the client secret or a token.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import msal
import requests

from watch_pipeline.mail.base import EmailMessage, Mailer, MailError, one_line

DEFAULT_AUTHORITY_BASE = "https://login.microsoftonline.com"
DEFAULT_GRAPH_BASE = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def graph_payload(message: EmailMessage) -> dict[str, Any]:
    """The JSON body of ``POST /users/{from}/sendMail`` for ``message``."""
    return {
        "message": {
            "subject": one_line(message.subject),
            "body": {"contentType": "HTML", "content": message.html},
            "toRecipients": [{"emailAddress": {"address": a}} for a in message.to],
        },
        "saveToSentItems": False,
    }


class GraphMailer(Mailer):
    """Sends as one mailbox through Microsoft Graph with an app-only (client-credentials) token.

    Args:
        tenant_id: The Entra tenant (GUID or domain).
        client_id: The app registration's client id.
        client_secret: The app's client secret (kept in memory only).
        from_address: The mailbox that sends (``/users/{from_address}/sendMail``).
        authority_base: The login endpoint without the tenant.
        graph_base: The Graph API root including its version.
        timeout: Seconds per HTTP request.
        max_retries: Retries after a 429, a 5xx or a connection failure (the first try is extra).
        max_retry_after: The longest ``Retry-After`` honoured, in seconds; longer waits fail.
        backoff: Seconds before the first retry of a 5xx; doubles each time.
        verify: TLS verification for both endpoints: ``True`` (system CAs, or requests'
            ``REQUESTS_CA_BUNDLE``) or the path of a CA bundle.
        sleep: The clock used between retries (tests pass a fake).
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        from_address: str,
        *,
        authority_base: str = DEFAULT_AUTHORITY_BASE,
        graph_base: str = DEFAULT_GRAPH_BASE,
        timeout: float = 30,
        max_retries: int = 3,
        max_retry_after: float = 120,
        backoff: float = 1.0,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._client_secret = client_secret
        self.from_address = from_address
        self.authority = f"{authority_base.rstrip('/')}/{quote(tenant_id, safe='')}"
        self.graph_base = graph_base.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.backoff = backoff
        self.verify = verify
        self._sleep = sleep
        self._app: msal.ConfidentialClientApplication | None = None
        self._http: requests.Session | None = None
        self._last_token: str | None = None

    def __repr__(self) -> str:
        return f"GraphMailer({self.description!r})"

    @property
    def description(self) -> str:
        """E.g. ``m365://alerts@contoso.com (tenant …, client …)``."""
        return f"m365://{self.from_address} (tenant {self.tenant_id}, client {self.client_id})"

    # -- the interface ---------------------------------------------------------------------

    def test(self) -> None:
        """Acquire a token (proves tenant, client id and secret); nothing is sent."""
        self._token()

    def send(self, message: EmailMessage) -> None:
        """POST ``message`` to Graph ``sendMail``, or raise :class:`MailError`."""
        url = f"{self.graph_base}/users/{quote(self.from_address, safe='@')}/sendMail"
        payload = graph_payload(message)
        refreshed = False
        retries = 0
        while True:
            token = self._token()
            try:
                response = self._session().post(
                    url, json=payload, headers={"Authorization": f"Bearer {token}"})
            except requests.RequestException as exc:
                if retries < self.max_retries:
                    retries += 1
                    self._sleep(self._backoff(retries))
                    continue
                raise MailError(self._scrub(
                    f"cannot reach Microsoft Graph at {self.graph_base}: "
                    f"{_request_reason(exc)}")) from None
            status = response.status_code
            if 200 <= status < 300:
                return
            if status == 401 and not refreshed:
                # An expired or revoked token MSAL still thinks is valid: fetch a new one once.
                self._forget_tokens()
                refreshed = True
                continue
            if status == 429 and retries < self.max_retries:
                wait = _retry_after(response, default=self._backoff(retries + 1))
                if wait > self.max_retry_after:
                    raise MailError(f"Microsoft Graph throttled sendMail as {self.from_address}: "
                                    f"Retry-After {wait:g} s exceeds the "
                                    f"{self.max_retry_after:g} s this mailer waits")
                retries += 1
                self._sleep(wait)
                continue
            if status >= 500 and retries < self.max_retries:
                retries += 1
                self._sleep(self._backoff(retries))
                continue
            raise MailError(self._scrub(self._failure(response, retries)))

    # -- internals --------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        """One HTTP session for MSAL and Graph, with this mailer's TLS trust and timeout.

        ``verify`` and ``timeout`` are bound per request: a session-wide ``verify`` would lose
        to ``REQUESTS_CA_BUNDLE`` in requests' environment merge, a per-request one does not.
        """
        if self._http is None:
            session = requests.Session()
            session.request = functools.partial(  # type: ignore[method-assign]
                session.request, timeout=self.timeout, verify=self.verify)
            self._http = session
        return self._http

    def _client(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            with self._login_endpoint("is not usable (check the tenant id)"):
                # instance_discovery=False: MSAL would otherwise ask login.microsoftonline.com
                # whether a non-Microsoft authority host (a sovereign cloud, a test server) is
                # known; the tenant's OpenID configuration is still fetched and checked.
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._client_secret,
                    authority=self.authority, instance_discovery=False,
                    http_client=self._session())
        return self._app

    @contextlib.contextmanager
    def _login_endpoint(self, bad_answer: str) -> Iterator[None]:
        """Turn a failed call to the login endpoint into a :class:`MailError`.

        Args:
            bad_answer: What an unusable answer means here, after "the ... login endpoint".
        """
        try:
            yield
        except requests.RequestException as exc:
            raise MailError(self._scrub(
                f"cannot reach the Microsoft 365 login endpoint {self.authority}: "
                f"{_request_reason(exc)}")) from None
        except ValueError as exc:
            raise MailError(self._scrub(
                f"the Microsoft 365 login endpoint {self.authority} {bad_answer}: "
                f"{one_line(str(exc))[:300]}")) from None

    def _token(self) -> str:
        app = self._client()
        with self._login_endpoint("answered nonsense"):
            result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        token = (result or {}).get("access_token")
        if not token:
            error = (result or {}).get("error", "no access token")
            detail = one_line(str((result or {}).get("error_description", "")))
            detail = detail.split(" Trace ID:")[0][:300]
            raise MailError(self._scrub(
                f"Microsoft 365 refused a token for client {self.client_id} in tenant "
                f"{self.tenant_id}: {error}" + (f": {detail}" if detail else "")))
        self._last_token = token
        return token

    def _forget_tokens(self) -> None:
        app = self._client()
        cache = app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2 ** (attempt - 1)

    def _failure(self, response: requests.Response, retries: int) -> str:
        status = response.status_code
        code, text = _graph_error(response)
        after = f" after {retries} retries" if retries else ""
        if status == 401:
            what = "refused the access token even after a fresh login"
        elif status == 403:
            what = "denied sendMail (does the app have the Mail.Send application permission?)"
        elif status == 404:
            what = "does not know the sending mailbox"
        elif status == 429:
            what = "kept throttling sendMail"
        else:
            what = "failed sendMail"
        detail = f": {code}" if code else ""
        detail += f": {text}" if text else ""
        return (f"Microsoft Graph {what} as {self.from_address} (HTTP {status}{after})"
                f"{detail}")

    def _scrub(self, text: str) -> str:
        for secret in (self._client_secret, self._last_token):
            if secret:
                text = text.replace(secret, "***")
        return text


def _retry_after(response: requests.Response, *, default: float) -> float:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else ``default``."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", one_line(response.text)[:200]
    if not isinstance(error, dict):
        return "", one_line(str(error))[:200]
    return str(error.get("code", "")), one_line(str(error.get("message", "")))[:300]


def _request_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failure: {one_line(str(exc))[:300]}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {one_line(str(exc))[:300]}"
    return one_line(str(exc))[:300] or type(exc).__name__
