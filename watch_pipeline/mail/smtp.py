"""SMTP and Exchange submission through :mod:`smtplib`.

Port 465 means implicit TLS (``SMTP_SSL``); any other port starts in plain text and upgrades with
STARTTLS when TLS is on. The server certificate is verified against the system CA store (plus an
optional extra CA file) unless ``insecure_skip_verify`` is set explicitly. ``smtplib``'s debug
output is never enabled: it would print the base64 of the AUTH exchange, i.e. the password.

Credentials never travel in clear unless the operator allowed it:

* with TLS on, a server that does not offer STARTTLS (or refuses it) is an error; there is no
  fall-back to plain text;
* with TLS off (``--no-tls``) and a username, the mailer refuses before it even connects unless
  ``allow_insecure_auth`` is set (``email add/update --allow-insecure-auth``, the catalog's
  ``smtp_allow_insecure_auth``), so no AUTH is ever sent in clear by default.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid

from watch_pipeline.mail.base import EmailMessage, Mailer, MailError, one_line

IMPLICIT_TLS_PORT = 465
DEFAULT_SUBMISSION_PORT = 587


def _server_text(exc: smtplib.SMTPResponseException) -> str:
    """The server's reply as ``code text`` (one line, bytes decoded)."""
    raw = exc.smtp_error
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"{exc.smtp_code} {one_line(text)}".strip()


class SmtpMailer(Mailer):
    r"""Sends through an SMTP server (submission on 587, implicit TLS on 465, or plain 25).

    Args:
        host: Server name or address.
        port: Server port; 465 selects implicit TLS.
        use_tls: Upgrade with STARTTLS on ports other than 465 (ignored on 465: always TLS).
        username: Log in as this user when set.
        password: The user's password (kept in memory only).
        timeout: Seconds for connecting and for each server reply.
        insecure_skip_verify: Accept any server certificate. Only for an operator who asked.
        login_domain: Log in as ``DOMAIN\username`` (Exchange's NTLM-style account names).
        implicit_tls: Force implicit TLS on or off; ``None`` means "port 465".
        ssl_context: The TLS context to use instead of building one (tests, pinned CAs).
        ca_file: A PEM file of extra CA certificates to trust beside the system store.
        local_hostname: The name sent in EHLO (default: this machine's FQDN).
        allow_insecure_auth: Send the username and password over a connection without TLS
            (``use_tls=False``). Off: such a mailer refuses before connecting.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_SUBMISSION_PORT,
        *,
        use_tls: bool = True,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30,
        insecure_skip_verify: bool = False,
        login_domain: str | None = None,
        implicit_tls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        allow_insecure_auth: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.implicit_tls = port == IMPLICIT_TLS_PORT if implicit_tls is None else implicit_tls
        self.use_tls = use_tls or self.implicit_tls
        self.username = username or None
        self._password = password
        self.timeout = timeout
        self.insecure_skip_verify = insecure_skip_verify
        self.login_domain = login_domain or None
        self._ssl_context = ssl_context
        self.ca_file = ca_file or None
        self.local_hostname = local_hostname
        self.allow_insecure_auth = allow_insecure_auth

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"

    @property
    def login_user(self) -> str | None:
        r"""The account name sent in AUTH (``DOMAIN\user`` when a login domain is set)."""
        if self.username and self.login_domain and "\\" not in self.username:
            return f"{self.login_domain}\\{self.username}"
        return self.username

    @property
    def where(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def description(self) -> str:
        r"""E.g. ``smtp+starttls://CORP\bob@mail.example:587``."""
        scheme = "smtps" if self.implicit_tls else "smtp+starttls" if self.use_tls else "smtp"
        user = f"{self.login_user}@" if self.username else ""
        return f"{scheme}://{user}{self.where}"

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context: system CAs (+ ``ca_file``), hostname checked."""
        if self._ssl_context is not None:
            return self._ssl_context
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise MailError(f"TLS: cannot load CA file {self.ca_file}: {exc}") from None
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # -- the interface ---------------------------------------------------------------------

    def test(self) -> None:
        """Connect, negotiate TLS, log in and say NOOP; nothing is sent."""
        self._session(None)

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` to every recipient, or raise :class:`MailError`."""
        self._session(message)

    # -- internals --------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    local_hostname=self.local_hostname,
                                    context=self.tls_context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                            local_hostname=self.local_hostname)

    def _refuse_clear_auth(self) -> None:
        """Raise before connecting when a login would go over a connection without TLS."""
        if self.username and not self.use_tls and not self.allow_insecure_auth:
            raise MailError(
                f"refusing to send the password of user {self.login_user} to SMTP server "
                f"{self.where} without TLS: turn TLS on (--tls), or, for a trusted local relay "
                "only, allow it with --allow-insecure-auth")

    def _session(self, message: EmailMessage | None) -> None:
        self._refuse_clear_auth()
        try:
            with self._connect() as smtp:
                smtp.ehlo()
                if self.use_tls and not self.implicit_tls:
                    if not smtp.has_extn("starttls"):
                        raise MailError(
                            f"TLS: SMTP server {self.where} does not offer STARTTLS "
                            "(turn TLS off only for a trusted local relay)")
                    try:
                        smtp.starttls(context=self.tls_context())
                    except smtplib.SMTPResponseException as exc:
                        raise MailError(f"TLS: SMTP server {self.where} refused STARTTLS: "
                                        f"{_server_text(exc)}") from None
                    smtp.ehlo()
                if self.username:
                    self._login(smtp)
                if message is None:
                    smtp.noop()
                else:
                    self._deliver(smtp, message)
        except MailError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"SMTP login refused for user {self.login_user} on {self.where}: "
                            f"{_server_text(exc)}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(f"{addr} ({code} {_decode(text)})"
                                for addr, (code, text) in exc.recipients.items())
            raise MailError(f"SMTP server {self.where} refused every recipient: {refused}") \
                from None
        except smtplib.SMTPSenderRefused as exc:
            raise MailError(f"SMTP server {self.where} refused sender {exc.sender}: "
                            f"{_server_text(exc)}") from None
        except smtplib.SMTPResponseException as exc:
            raise MailError(f"SMTP server {self.where} answered {_server_text(exc)}") from None
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):  # smtplib wraps a read timeout
                raise MailError(f"cannot reach SMTP server {self.where}: timed out after "
                                f"{self.timeout:g} s") from None
            raise MailError(f"SMTP server {self.where} closed the connection: "
                            f"{exc or 'no reason given'}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(f"SMTP server {self.where}: {exc}") from None
        except smtplib.SMTPException as exc:
            raise MailError(f"SMTP error with {self.where}: {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            raise MailError(f"TLS certificate of {self.where} not trusted: "
                            f"{exc.verify_message or exc.reason}") from None
        except ssl.SSLError as exc:
            raise MailError(f"TLS handshake with {self.where} failed: "
                            f"{exc.reason or exc}") from None
        except TimeoutError:
            raise MailError(f"cannot reach SMTP server {self.where}: timed out after "
                            f"{self.timeout:g} s") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise MailError(f"cannot reach SMTP server {self.where}: {reason}") from None

    def _login(self, smtp: smtplib.SMTP) -> None:
        if not smtp.has_extn("auth"):
            raise MailError(f"SMTP server {self.where} offers no AUTH, but a username "
                            f"({self.login_user}) is configured"
                            + ("" if self.use_tls else "; many servers offer AUTH only after "
                               "STARTTLS"))
        smtp.login(self.login_user or "", self._password or "")

    def _deliver(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        mime = to_mime(message, domain=self.host)
        refused = smtp.send_message(mime, from_addr=message.from_address,
                                    to_addrs=list(message.to))
        if refused:
            names = ", ".join(f"{addr} ({code} {_decode(text)})"
                              for addr, (code, text) in refused.items())
            raise MailError(f"SMTP server {self.where} refused some recipients (the others got "
                            f"the message): {names}")


def _decode(raw: bytes | str) -> str:
    return one_line(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)


def to_mime(message: EmailMessage, *, domain: str | None = None) -> MimeMessage:
    """``message`` as a multipart/alternative MIME message (text first, then HTML)."""
    mime = MimeMessage()
    mime["Subject"] = one_line(message.subject)
    mime["From"] = message.from_address
    mime["To"] = ", ".join(message.to)
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = make_msgid(domain=domain)
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


class ExchangeMailer(SmtpMailer):
    r"""SMTP submission to an on-premises Exchange server: TLS always, ``DOMAIN\user`` login.

    Args:
        server: The Exchange server (its client-submission endpoint).
        port: Submission port (587; 465 means implicit TLS).
        username: Log in as this user when set.
        password: The user's password.
        domain: The Windows domain; the login becomes ``DOMAIN\username``.
        timeout: Seconds for connecting and for each server reply.
        ssl_context: The TLS context to use instead of building one.
        ca_file: A PEM file of extra CA certificates (an internal CA) to trust.
        local_hostname: The name sent in EHLO.
    """

    def __init__(
        self,
        server: str,
        port: int = DEFAULT_SUBMISSION_PORT,
        *,
        username: str | None = None,
        password: str | None = None,
        domain: str | None = None,
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        local_hostname: str | None = None,
    ) -> None:
        super().__init__(server, port, use_tls=True, username=username, password=password,
                         timeout=timeout, login_domain=domain, ssl_context=ssl_context,
                         ca_file=ca_file, local_hostname=local_hostname)
