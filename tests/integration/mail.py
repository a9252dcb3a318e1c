"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and a
homeserver set up to send mail through it, for the email tests."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP, Envelope, Session

LINK = re.compile(r"https?://\S+")
MAIL_WAIT_S = 30.0


class Mailbox:
    """What the SMTP server received, in order."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.sessions: list[Session] = []  # the SMTP session each message came in
        self.encrypted: list[bool] = []  # whether it came over TLS
        self.port = 0
        self._arrived = asyncio.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.content or b"", policy=policy.default)
        assert isinstance(message, EmailMessage)
        async with self._arrived:
            self.messages.append(message)
            self.sessions.append(session)
            transport = server.transport
            self.encrypted.append(
                transport is not None and transport.get_extra_info("ssl_object") is not None
            )
            self._arrived.notify_all()
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(self, address: str, count: int = 1) -> EmailMessage:
        """The `count`-th mail to `address`, waiting for it to arrive."""
        async with asyncio.timeout(MAIL_WAIT_S), self._arrived:
            await self._arrived.wait_for(lambda: len(self.to(address)) >= count)
        return self.to(address)[count - 1]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    """The one link of a validation mail (the plain-text part)."""
    links = LINK.findall(text_of(message))
    assert len(links) == 1, links
    return str(links[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def open_mailbox(
    tls: ssl.SSLContext | None = None, *, implicit_tls: bool = False, **smtp: Any
) -> AsyncIterator[Mailbox]:
    """An SMTP server on a free loopback port, in this event loop: plain, offering
    STARTTLS with `tls` (`smtp` options such as require_starttls and authenticator go to
    aiosmtpd), or TLS from the start with `implicit_tls`."""
    box = Mailbox()
    loop = asyncio.get_running_loop()
    starttls = None if implicit_tls else tls
    server = await loop.create_server(
        lambda: SMTP(box, hostname="mail.test.local", tls_context=starttls, **smtp),
        "127.0.0.1",
        0,
        ssl=tls if implicit_tls else None,
    )
    box.port = server.sockets[0].getsockname()[1]
    yield box
    server.close()
    await server.wait_closed()


def mail_settings(box: Mailbox, port: int, **overrides: Any) -> dict[str, Any]:
    """Config overrides: mail through `box`, the server on `port` (links use it)."""
    return {
        "email.smtp_host": "127.0.0.1",
        "email.smtp_port": box.port,
        "email.notif_from": "%(app)s homeserver <noreply@test.local>",
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "port": port,
        "open_registration": True,
        "rate_limits.enabled": False,
        **overrides,
    }


async def mail_server(
    homeserver_client: Callable[..., Any], box: Mailbox, **overrides: Any
) -> TestClient[Any, Any]:
    port = free_port()
    client: TestClient[Any, Any] = await homeserver_client(**mail_settings(box, port, **overrides))
    return client
