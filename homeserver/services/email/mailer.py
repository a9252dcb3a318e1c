"""Sending mail through the operator's SMTP server (aiosmtplib), as Synapse's `email`
block describes it: implicit TLS (`force_tls`), STARTTLS when offered (`enable_tls`)
or demanded (`require_transport_security`), and optional login.

Every mail has a plain-text part and an HTML alternative. aiosmtplib is imported by the
first mail or check, so a server without an `email` block never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from homeserver.config import Config
from homeserver.config import email as email_config

if TYPE_CHECKING:
    import aiosmtplib

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
CHECK_TIMEOUT_S = 10.0


class MailError(Exception):
    """The SMTP server could not be reached or refused the mail."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str | None
    password: str | None
    force_tls: bool
    require_transport_security: bool
    enable_tls: bool
    sender: str  # the From header: `notif_from` with the app name put in


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    unsubscribe: str | None = None  # a link that stops mails of this kind


def build_message(mail: Mail, sender: str, domain: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain)
    if mail.unsubscribe is not None:
        # RFC 8058: mail clients offer "unsubscribe" and POST to the link themselves.
        message["List-Unsubscribe"] = f"<{mail.unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


class Mailer:
    """`await mailer.send(mail)`; raises MailError when the mail did not go out. Without
    settings (no `email` block) it is disabled and sends nothing."""

    def __init__(
        self,
        settings: SmtpSettings | None,
        server_name: str,
        subjects: Mapping[str, str] = email_config.DEFAULT_SUBJECTS,
    ) -> None:
        self.settings = settings
        self.server_name = server_name
        # The subjects of the mails (Synapse's `email.subjects`), for the templates.
        self.subjects = subjects

    @classmethod
    def from_config(cls, config: Config) -> Mailer:
        """The `email` block's SMTP settings; disabled without `email.notif_from`."""
        if not email_config.mail_enabled(config):
            return cls(None, config.server_name)
        settings = SmtpSettings(
            host=config.email_smtp_host,
            port=email_config.smtp_port(config),
            user=config.email_smtp_user,
            password=config.email_smtp_pass,
            force_tls=config.email_force_tls,
            require_transport_security=config.email_require_transport_security,
            enable_tls=config.email_enable_tls,
            sender=email_config.sender(config),
        )
        return cls(settings, config.server_name, email_config.subjects(config))

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    def _client(self, s: SmtpSettings, timeout: float) -> aiosmtplib.SMTP:
        import aiosmtplib

        # start_tls: None upgrades when the server offers STARTTLS, True insists on it.
        start_tls: bool | None = None
        if s.force_tls or not s.enable_tls:
            start_tls = False
        elif s.require_transport_security:
            start_tls = True
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.user,
            password=s.password,
            use_tls=s.force_tls,
            start_tls=start_tls,
            timeout=timeout,
        )

    async def send(self, mail: Mail) -> None:
        s = self.settings
        if s is None:
            raise MailError("mail is not configured (no email.notif_from)")
        import aiosmtplib

        message = build_message(mail, s.sender, self.server_name)
        try:
            async with self._client(s, SEND_TIMEOUT_S) as smtp:
                await smtp.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"{s.host}:{s.port}: {exc}") from exc

    async def check(self) -> None:
        """At start: connect, upgrade and log in as configured, then leave; MailError
        says what is wrong, so a mistake stops the start instead of every mail."""
        s = self.settings
        if s is None:
            return
        import aiosmtplib

        try:
            async with self._client(s, CHECK_TIMEOUT_S):
                pass
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"cannot use the SMTP server {s.host}:{s.port}: {exc}") from exc
