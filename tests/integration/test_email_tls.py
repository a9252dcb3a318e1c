"""Mail through an SMTP server that speaks TLS, as operators' servers do: STARTTLS
required with a login, TLS from the start (`force_tls`), and a server without STARTTLS
refused when `require_transport_security` is set. The test CA is trusted the way an
operator trusts a private one: SSL_CERT_FILE."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from contrib.synapse_harness import make_self_signed_cert
from homeserver.api.context import HOMESERVER
from homeserver.services.email.mailer import MailError
from tests.integration.conftest import register_user
from tests.integration.mail import link_in, mail_server, open_mailbox
from tests.integration.test_email import ADD_TOKEN, follow, request_token


@pytest.fixture
def server_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    cert, key = make_self_signed_cert(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def only_matrix(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"matrix", b"pw")
    return AuthResult(success=ok)


async def test_starttls_with_login(
    homeserver_client: Callable[..., Any], server_tls: ssl.SSLContext
) -> None:
    async with open_mailbox(
        server_tls, require_starttls=True, auth_required=True, authenticator=only_matrix
    ) as box:
        client = await mail_server(
            homeserver_client,
            box,
            **{
                "email.smtp_host": "localhost",
                "email.smtp_user": "matrix",
                "email.smtp_pass": "pw",
                "email.require_transport_security": True,
            },
        )
        await client.app[HOMESERVER].mailer.check()
        user = await register_user(client, "alice")
        await request_token(client, ADD_TOKEN, "alice@example.org", token=user["access_token"])
        mail = await box.wait_for("alice@example.org")
        assert box.encrypted == [True] and box.sessions[0].authenticated
        assert (await follow(link_in(mail)))[0] == 200


async def test_force_tls(homeserver_client: Callable[..., Any], server_tls: ssl.SSLContext) -> None:
    async with open_mailbox(server_tls, implicit_tls=True) as box:
        client = await mail_server(
            homeserver_client, box, **{"email.smtp_host": "localhost", "email.force_tls": True}
        )
        user = await register_user(client, "bob")
        await request_token(client, ADD_TOKEN, "bob@example.org", token=user["access_token"])
        await box.wait_for("bob@example.org")
        assert box.encrypted == [True]


async def test_transport_security_required_but_not_offered(
    homeserver_client: Callable[..., Any],
) -> None:
    async with open_mailbox() as box:
        client = await mail_server(
            homeserver_client, box, **{"email.require_transport_security": True}
        )
        with pytest.raises(MailError, match="STARTTLS"):
            await client.app[HOMESERVER].mailer.check()
