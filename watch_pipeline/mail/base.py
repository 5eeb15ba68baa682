"""The mail seam: one message shape and one interface for every delivery provider.

Providers (``smtp``, ``exchange``, ``m365``) live one per module; callers build a
:class:`EmailMessage` (usually with :mod:`watch_pipeline.mail.render`) and hand it to a
:class:`Mailer`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


class MailError(Exception):
    """Delivery failed.

    The message is safe to store in the catalog and to log: it names the server, the user and the
    reason, never a password, client secret or access token.
    """


@dataclass(frozen=True)
class EmailMessage:
    """One message, sent as multipart/alternative (plain text + HTML).

    Attributes:
        subject: One line; line breaks are folded into spaces by the providers.
        text: The plain-text body.
        html: The HTML body; every interpolated value must already be escaped.
        to: Recipient addresses, validated and de-duplicated.
        from_address: The sender address (for ``m365`` the mailbox that sends).
    """

    subject: str
    text: str
    html: str
    to: tuple[str, ...]
    from_address: str

    def __post_init__(self) -> None:
        if not self.to:
            raise ValueError("an email message needs at least one recipient")


class Mailer(abc.ABC):
    """Delivers :class:`EmailMessage` objects through one configured provider.

    Contract:
        * Constructing a mailer does no I/O; :meth:`test` and :meth:`send` connect, and each call
          stands alone (connections are not kept between calls; cached tokens may be).
        * :meth:`test` checks that the server can be reached and the credentials are accepted,
          without delivering anything.
        * :meth:`send` delivers one message to every address in ``message.to`` or raises.
        * Both raise :class:`MailError` only, with a message fit for the catalog's
          ``test_message`` column: it names the server, the user and the reason, and never
          contains a password, client secret or access token.
    """

    @abc.abstractmethod
    def send(self, message: EmailMessage) -> None:
        """Deliver ``message``.

        Raises:
            MailError: The provider refused or could not be reached.
        """

    @abc.abstractmethod
    def test(self) -> None:
        """Connect and authenticate without sending anything.

        Raises:
            MailError: The provider refused or could not be reached.
        """

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where mail goes, for messages and logs, e.g. ``smtp://user@host:587`` (no secret)."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) folded to one space."""
    return " ".join(text.split())
