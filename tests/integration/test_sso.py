"""Single sign-on through a real OpenID provider (oidc-provider on loopback): the
login as a person does it in a browser, then the client's token login."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp
import nio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc.jwk import RSAKey

from homeserver.api.context import HOMESERVER
from homeserver.storage.accounts import accounts
from tests.integration.conftest import CLIENT_V3, auth_header, make_user
from tests.integration.oidc_op import Browser, OpenIdProvider, free_port

CLIENT_URL = "https://client.example/after-login"
MAPPING = {
    "config": {
        "localpart_template": "{{ user.preferred_username }}",
        "display_name_template": "{{ user.name }}",
    }
}


@pytest.fixture(scope="module")
async def op(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OpenIdProvider]:
    """A provider that puts the user's claims in the id token (as Keycloak does)."""
    provider = OpenIdProvider(tmp_path_factory.mktemp("op"), {})
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
async def op2(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OpenIdProvider]:
    """A second provider, giving claims only at its userinfo endpoint."""
    provider = OpenIdProvider(tmp_path_factory.mktemp("op2"), {}, conform_id_token_claims=True)
    await provider.start()
    yield provider
    await provider.stop()


class Setup:
    """A homeserver whose `oidc_providers` name clients registered at the providers."""

    def __init__(self, homeserver_client: Callable[..., Any]) -> None:
        self.homeserver_client = homeserver_client
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.callback = f"{self.base}/_synapse/client/oidc/callback"
        self.providers: list[OpenIdProvider] = []
        self.client: TestClient[Any, Any] | None = None

    async def entry(
        self, op: OpenIdProvider, idp_id: str, client: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """An `oidc_providers` entry for a client registered at `op` (with `client`'s
        metadata); without a client secret when the client signs its requests."""
        self.providers.append(op)
        registered = await op.register_client(self.callback, **(client or {}))
        secret = (
            {"client_secret": registered["client_secret"]} if "client_secret" in registered else {}
        )
        return {
            "idp_id": idp_id,
            "idp_name": f"Provider {idp_id}",
            "issuer": op.issuer,
            "client_id": registered["client_id"],
            **secret,
            "skip_verification": True,
            "scopes": ["openid", "profile", "email", "groups"],
            "user_mapping_provider": MAPPING,
            **extra,
        }

    async def start(
        self,
        *entries: dict[str, Any],
        trusted: tuple[str, ...] = ("https://client.example/",),
        **config: Any,
    ) -> TestClient[Any, Any]:
        self.client = await self.homeserver_client(
            port=self.port,
            public_baseurl=self.base + "/",
            oidc_providers=list(entries),
            **{"rate_limits.enabled": False, "sso.client_whitelist": list(trusted)},
            **config,
        )
        return self.client

    def browser(self) -> Browser:
        return Browser(self.base, self.providers)


@pytest.fixture
async def setup(homeserver_client: Callable[..., Any]) -> Setup:
    return Setup(homeserver_client)


async def sso_login(setup: Setup, idp_id: str, login: str) -> str:
    """Sign in through the provider in a fresh browser; the login token the client
    gets back on its redirect URL."""
    browser = setup.browser()
    try:
        status, url, body = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/{idp_id}?redirectUrl={CLIENT_URL}",
            login=login,
        )
    finally:
        await browser.close()
    assert status == 302, body
    assert url.startswith(CLIENT_URL + "?loginToken=")
    return parse_qs(urlparse(url).query)["loginToken"][0]


async def token_login(client: TestClient[Any, Any], token: str) -> dict[str, Any]:
    resp = await client.post(f"{CLIENT_V3}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_first_login_creates_the_user_and_the_next_reaches_it(
    setup: Setup, op: OpenIdProvider, tmp_path: Path
) -> None:
    op.set_account_claims(
        {"sub-carol": {"preferred_username": "Carol", "name": "Carol C", "email": "c@x.org"}}
    )
    client = await setup.start(await setup.entry(op, "keycloak", idp_brand="keycloak"))
    resp = await client.get(f"{CLIENT_V3}/login")
    flows = {flow["type"]: flow for flow in (await resp.json())["flows"]}
    assert flows["m.login.sso"]["identity_providers"] == [
        {"id": "oidc-keycloak", "name": "Provider keycloak", "brand": "keycloak"}
    ]
    assert "m.login.token" in flows

    first = await token_login(client, await sso_login(setup, "oidc-keycloak", "sub-carol"))
    assert first["user_id"] == "@carol:test.local"
    resp = await client.get(f"{CLIENT_V3}/profile/@carol:test.local/displayname")
    assert (await resp.json()) == {"displayname": "Carol C"}

    # The provider renames the user's email and username: the subject keeps the account.
    op.set_account_claims({"sub-carol": {"preferred_username": "caroline", "email": "n@x.org"}})
    token = await sso_login(setup, "oidc-keycloak", "sub-carol")
    second = await token_login(client, token)
    assert second["user_id"] == "@carol:test.local"
    assert second["device_id"] != first["device_id"]
    # A login token works once.
    resp = await client.post(f"{CLIENT_V3}/login", json={"type": "m.login.token", "token": token})
    assert resp.status == 403


async def test_two_providers_and_userinfo(
    setup: Setup, op: OpenIdProvider, op2: OpenIdProvider
) -> None:
    """Each provider's users are its own: the same username at two providers makes
    two accounts (the second numbered, as Synapse). The second provider gives its
    claims only at userinfo."""
    claims = {"preferred_username": "dave", "name": "Dave"}
    op.set_account_claims({"sub-dave": claims})
    op2.set_account_claims({"sub-dave": claims})
    client = await setup.start(
        await setup.entry(op, "one"),
        await setup.entry(op2, "two", user_profile_method="userinfo_endpoint"),
    )
    resp = await client.get(f"{CLIENT_V3}/login")
    flows = {flow["type"]: flow for flow in (await resp.json())["flows"]}
    assert [p["id"] for p in flows["m.login.sso"]["identity_providers"]] == ["oidc-one", "oidc-two"]
    first = await token_login(client, await sso_login(setup, "oidc-one", "sub-dave"))
    second = await token_login(client, await sso_login(setup, "oidc-two", "sub-dave"))
    assert (first["user_id"], second["user_id"]) == ("@dave:test.local", "@dave1:test.local")

    # Without an idpId the person chooses among the providers.
    browser = setup.browser()
    try:
        status, url, body = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect?redirectUrl={CLIENT_URL}"
        )
        assert status == 200 and "Continue with Provider two" in body
        link = body.split('href="')[2].split('"')[0].replace("&amp;", "&")
        status, url, _ = await browser.browse(urljoin(url, link), login="sub-dave")
        assert status == 302 and url.startswith(CLIENT_URL + "?loginToken=")
    finally:
        await browser.close()


async def test_attribute_requirements_refuse_users(setup: Setup, op: OpenIdProvider) -> None:
    op.set_account_claims(
        {
            "sub-erin": {"preferred_username": "erin", "groups": ["staff", "matrix"]},
            "sub-mallory": {"preferred_username": "mallory", "groups": ["staff"]},
        }
    )
    await setup.start(
        await setup.entry(
            op, "corp", attribute_requirements=[{"attribute": "groups", "one_of": ["matrix"]}]
        )
    )
    await sso_login(setup, "oidc-corp", "sub-erin")
    browser = setup.browser()
    try:
        status, _, body = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/oidc-corp?redirectUrl={CLIENT_URL}",
            login="sub-mallory",
        )
    finally:
        await browser.close()
    assert status == 403
    assert "may not sign in here" in body
    async with setup.client.server.app[HOMESERVER].db.pool.connection() as conn:  # type: ignore[union-attr]
        assert not await accounts.user_exists(conn, "@mallory:test.local")


async def test_first_login_picks_a_username(
    setup: Setup, op: OpenIdProvider, tmp_path: Path
) -> None:
    """No username claim: the person chooses one on the server's page."""
    op.set_account_claims({"sub-frank": {"name": "Frank F"}, "sub-taken": {"name": "T"}})
    bridge = tmp_path / "bridge.yaml"
    bridge.write_text(
        "id: bridge\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bridgebot\n"
        "namespaces:\n  users: [{exclusive: true, regex: '@bridge_.*'}]\n"
    )
    client = await setup.start(await setup.entry(op, "kc"), app_service_config_files=[str(bridge)])
    await make_user(client, "taken")
    browser = setup.browser()
    try:
        status, url, body = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/oidc-kc?redirectUrl={CLIENT_URL}",
            login="sub-frank",
        )
        assert status == 200 and url.endswith("/_synapse/client/pick_username/account")
        assert "Welcome, Frank F" in body
        async with browser.session.get(
            f"{setup.base}/_synapse/client/pick_username/check", params={"username": "taken"}
        ) as resp:
            assert (await resp.json())["errcode"] == "M_USER_IN_USE"
        for name in ("taken", "bridge_frank"):  # an account's, or a bridge's namespace
            status, _, body = await browser.browse(url, method="POST", data={"username": name})
            assert status == 409 and "is taken" in body, body
        status, final, _ = await browser.browse(url, method="POST", data={"username": "frankie"})
        assert status == 302
        # The page's session is used up.
        status, _, _ = await browser.browse(url, method="POST", data={"username": "frank2"})
        assert status == 400
    finally:
        await browser.close()
    body = await token_login(client, parse_qs(urlparse(final).query)["loginToken"][0])
    assert body["user_id"] == "@frankie:test.local"
    resp = await client.get(f"{CLIENT_V3}/profile/@frankie:test.local/displayname")
    assert (await resp.json()) == {"displayname": "Frank F"}


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


async def test_sso_reauthentication_deletes_a_device_and_nio_logs_in(
    setup: Setup, op: OpenIdProvider
) -> None:
    op.set_account_claims(
        {"sub-ivy": {"preferred_username": "ivy"}, "sub-jon": {"preferred_username": "jon"}}
    )
    client = await setup.start(await setup.entry(op, "kc"))
    await sso_login(setup, "oidc-kc", "sub-jon")
    nio_client = nio.AsyncClient(setup.base, "")
    try:
        login = await nio_client.login(token=await sso_login(setup, "oidc-kc", "sub-ivy"))
        assert isinstance(login, nio.LoginResponse), login
        assert login.user_id == "@ivy:test.local"
        headers = auth_header(login.access_token)
        other = await token_login(client, await sso_login(setup, "oidc-kc", "sub-ivy"))
        path = f"{CLIENT_V3}/devices/{other['device_id']}"
        resp = await client.delete(path, json={}, headers=headers)
        assert resp.status == 401
        challenge = await resp.json()
        assert challenge["flows"] == [{"stages": ["m.login.sso"]}]
        fallback = (
            f"{setup.base}{CLIENT_V3}/auth/m.login.sso/fallback/web?session={challenge['session']}"
        )
        browser = setup.browser()
        try:
            # Signing in as someone else does not complete the stage.
            status, url, body = await browser.browse(fallback)
            link = urljoin(url, body.split('href="')[1].split('"')[0].replace("&amp;", "&"))
            status, _, body = await browser.browse(link, login="sub-jon")
            assert status == 403
            resp = await client.delete(path, json={"auth": challenge}, headers=headers)
            assert resp.status == 401
        finally:
            await browser.close()
        # The provider remembers who signed in there: Ivy uses her own browser.
        browser = setup.browser()
        try:
            status, _, body = await browser.browse(link, login="sub-ivy")
            assert status == 200 and "authDone" in body
        finally:
            await browser.close()
        resp = await client.delete(
            path, json={"auth": {"session": challenge["session"]}}, headers=headers
        )
        assert resp.status == 200, await resp.text()
        resp = await client.get(f"{CLIENT_V3}/devices", headers=headers)
        assert other["device_id"] not in [d["device_id"] for d in (await resp.json())["devices"]]
    finally:
        await nio_client.close()


async def test_private_key_jwt_client_and_untrusted_client_confirmation(
    setup: Setup, op: OpenIdProvider
) -> None:
    """The client proves itself with a signed assertion instead of a secret; and a
    client URL the server does not trust gets a page before its login token."""
    op.set_account_claims({"sub-kim": {"preferred_username": "kim"}})
    key = RSAKey.generate_key(2048, private=True)
    entry = await setup.entry(
        op,
        "signed",
        client={
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.as_dict(private=False)]},
        },
        client_auth_method="private_key_jwt",
        client_secret_jwt_key={
            "key": key.as_pem(private=True).decode(),
            "jwt_header": {"alg": "RS256"},
        },
    )
    client = await setup.start(entry, trusted=())
    browser = setup.browser()
    try:
        status, _, body = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/oidc-signed?redirectUrl={CLIENT_URL}",
            login="sub-kim",
        )
    finally:
        await browser.close()
    assert status == 200 and "You are about to sign in to <strong>https://client.example" in body
    url = html.unescape(body.split('class="button" href="')[1].split('"')[0])
    assert url.startswith(CLIENT_URL + "?loginToken=")
    body = await token_login(client, parse_qs(urlparse(url).query)["loginToken"][0])
    assert body["user_id"] == "@kim:test.local"


async def test_an_sso_account_may_add_a_password(setup: Setup, op: OpenIdProvider) -> None:
    """SSO only at first; after setting a password (re-authenticated by SSO), both."""
    op.set_account_claims({"sub-lee": {"preferred_username": "lee"}})
    client = await setup.start(await setup.entry(op, "kc"))
    login = await token_login(client, await sso_login(setup, "oidc-kc", "sub-lee"))
    headers = auth_header(login["access_token"])
    password_login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "lee"},
        "password": "new secret",
    }
    resp = await client.post(f"{CLIENT_V3}/login", json=password_login)
    assert resp.status == 403
    body = {"new_password": "new secret", "logout_devices": False}
    resp = await client.post(f"{CLIENT_V3}/account/password", json=body, headers=headers)
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.sso"]}]
    browser = setup.browser()
    try:
        status, url, page = await browser.browse(
            f"{setup.base}{CLIENT_V3}/auth/m.login.sso/fallback/web?session={challenge['session']}"
        )
        link = urljoin(url, html.unescape(page.split('class="button" href="')[1].split('"')[0]))
        status, _, page = await browser.browse(link, login="sub-lee")
        assert status == 200 and "authDone" in page
    finally:
        await browser.close()
    body["auth"] = {"session": challenge["session"]}
    resp = await client.post(f"{CLIENT_V3}/account/password", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"{CLIENT_V3}/login", json=password_login)
    assert resp.status == 200
    resp = await client.delete(
        f"{CLIENT_V3}/devices/{login['device_id']}", json={}, headers=headers
    )
    flows = (await resp.json())["flows"]
    assert flows == [{"stages": ["m.login.password"]}, {"stages": ["m.login.sso"]}]
