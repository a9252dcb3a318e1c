"""Single sign-on refusals: a tampered callback (state, another browser, a replay),
an id token with a wrong nonce, issuer, audience or expiry, a spoilt PKCE verifier,
and a provider that is down; each a page saying why, never a 500."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import CLIENT_V3
from tests.integration.sso.op import (
    CLIENT_URL,
    Browser,
    OpenIdProvider,
    Setup,
    free_port,
    sso_login,
)


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


class TokenEndpointInTheMiddle:
    """Stands between the homeserver and the provider's token endpoint and alters
    what passes: the id token (re-signed with the provider's own key, so only its
    claims are wrong) or the PKCE verifier."""

    TAMPER: ClassVar[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
        "nonce": lambda c: {"nonce": "not-the-nonce"},
        "issuer": lambda c: {"iss": "https://evil.example"},
        "audience": lambda c: {"aud": "another-client"},
        "expired": lambda c: {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
    }

    def __init__(self, op: OpenIdProvider) -> None:
        self.op = op
        self.mode = ""
        app = web.Application()
        app.router.add_post("/token", self.token)
        self.server = TestServer(app, host="127.0.0.1")

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        if self.mode == "verifier":
            form["code_verifier"] = "x" * 64
        headers = {"Authorization": request.headers["Authorization"]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.op.issuer}/token", data=form, headers=headers) as resp,
        ):
            status, body = resp.status, await resp.json()
        if status == 200 and self.mode in self.TAMPER:
            claims = _payload(body["id_token"])
            body["id_token"] = self.op.sign({**claims, **self.TAMPER[self.mode](claims)})
        return web.json_response(body, status=status)


async def test_tampered_callbacks_are_refused(setup: Setup, op: OpenIdProvider) -> None:
    op.set_account_claims({"sub-gina": {"preferred_username": "gina"}})
    middle = TokenEndpointInTheMiddle(op)
    await middle.server.start_server()
    try:
        await setup.start(
            await setup.entry(
                op,
                "mitm",
                discover=False,
                pkce_method="always",
                authorization_endpoint=f"{op.issuer}/auth",
                token_endpoint=str(middle.server.make_url("/token")),
                jwks_uri=f"{op.issuer}/jwks",
            )
        )
        start = f"{setup.base}{CLIENT_V3}/login/sso/redirect/oidc-mitm?redirectUrl={CLIENT_URL}"
        expected = {
            "nonce": "Invalid claim: 'nonce'",
            "issuer": "Invalid claim: 'iss'",
            "audience": "Invalid claim: 'aud'",
            "expired": "expired",
            "verifier": "the provider refused the code",
        }
        for mode, message in expected.items():
            middle.mode = mode
            browser = setup.browser()
            try:
                status, _, body = await browser.browse(start, login="sub-gina")
            finally:
                await browser.close()
            assert (mode, status) == (mode, 403)
            assert message in html.unescape(body), (mode, body)
        middle.mode = ""
        assert await sso_login(setup, "oidc-mitm", "sub-gina")
    finally:
        await middle.server.close()


async def _callback_url(setup: Setup, browser: Browser, idp_id: str, login: str) -> str:
    """Sign in at the provider but stop before the callback: its URL."""
    browser.hosts.discard(urlparse(setup.base).netloc)
    try:
        status, url, _ = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/{idp_id}?redirectUrl={CLIENT_URL}",
            login=login,
        )
    finally:
        browser.hosts.add(urlparse(setup.base).netloc)
    assert status == 302 and url.startswith(setup.callback), url
    return url


async def test_callback_state_and_browser_are_checked(setup: Setup, op: OpenIdProvider) -> None:
    op.set_account_claims({"sub-hal": {"preferred_username": "hal"}})
    await setup.start(await setup.entry(op, "kc"))
    browser = setup.browser()
    other = setup.browser()
    try:
        # The start itself goes to the homeserver: browse it there, then stop.
        url = await _callback_url(setup, browser, "oidc-kc", "sub-hal")
        query = parse_qs(urlparse(url).query)
        forged = url.replace(f"state={query['state'][0]}", "state=forged")
        status, _, body = await browser.browse(forged)
        assert status == 400 and "Unknown or expired login" in body
        # Another browser (no cookie of this login) may not finish it.
        status, _, body = await other.browse(url)
        assert status == 400
        # The state was used up by that attempt: the right browser starts again.
        status, _, body = await browser.browse(url)
        assert status == 400 and "Unknown or expired login" in body
        url = await _callback_url(setup, browser, "oidc-kc", "sub-hal")
        status, final, _ = await browser.browse(url)
        assert status == 302 and final.startswith(CLIENT_URL)
        # A provider's error is shown, not a 500.
        status, _, body = await browser.browse(f"{setup.callback}?error=access_denied&state=x")
        assert status == 400
    finally:
        await browser.close()
        await other.close()


async def test_provider_down_shows_a_page(setup: Setup) -> None:
    port = free_port()
    client = await setup.start(
        {
            "idp_id": "gone",
            "idp_name": "Gone",
            "issuer": f"http://127.0.0.1:{port}",
            "client_id": "c",
            "client_secret": "s",
            "skip_verification": True,
        }
    )
    resp = await client.get(
        f"{CLIENT_V3}/login/sso/redirect/oidc-gone",
        params={"redirectUrl": CLIENT_URL},
        allow_redirects=False,
    )
    assert resp.status == 503
    assert resp.content_type == "text/html"
    assert "Gone cannot be reached right now" in await resp.text()
    resp = await client.get(
        f"{CLIENT_V3}/login/sso/redirect/oidc-nope", params={"redirectUrl": CLIENT_URL}
    )
    assert resp.status == 404
    resp = await client.get(
        f"{CLIENT_V3}/login/sso/redirect/oidc-gone", params={"redirectUrl": "javascript:alert(1)"}
    )
    assert resp.status == 400
