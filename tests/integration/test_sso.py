"""Single sign-on through a real OpenID provider (oidc-provider on loopback): the
login as a person does it in a browser, then the client's token login."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, auth_header
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

    async def entry(self, op: OpenIdProvider, idp_id: str, **extra: Any) -> dict[str, Any]:
        self.providers.append(op)
        registered = await op.register_client(self.callback)
        return {
            "idp_id": idp_id,
            "idp_name": f"Provider {idp_id}",
            "issuer": op.issuer,
            "client_id": registered["client_id"],
            "client_secret": registered["client_secret"],
            "skip_verification": True,
            "scopes": ["openid", "profile", "email", "groups"],
            "user_mapping_provider": MAPPING,
            **extra,
        }

    async def start(self, *entries: dict[str, Any]) -> TestClient[Any, Any]:
        self.client = await self.homeserver_client(
            port=self.port,
            public_baseurl=self.base + "/",
            oidc_providers=list(entries),
            **{"rate_limits.enabled": False},
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
