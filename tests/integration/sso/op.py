"""A real OpenID provider for the tests (the `oidc-provider` npm package, installed
into a cache on first use), a browser that signs in through it, and a homeserver
configured for it (`Setup`; the fixtures are in conftest.py).

The provider's signing key is made here, so that a test may also forge what a
malicious or broken token endpoint would answer (`sign`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.integration.conftest import CLIENT_V3

CLIENT_URL = "https://client.example/after-login"
MAPPING = {
    "config": {
        "localpart_template": "{{ user.preferred_username }}",
        "display_name_template": "{{ user.name }}",
    }
}
NPM_DIR = Path.home() / ".cache" / "homeserver-npm" / "oidc-provider"
PACKAGE = "oidc-provider@9"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


def ensure_installed() -> Path:
    """The cache directory with oidc-provider installed (npm install on first use)."""
    if (NPM_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return NPM_DIR
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to install the test OpenID provider")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    manifest = NPM_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "homeserver-test-oidc-provider", "private": true}\n')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", PACKAGE],
        cwd=NPM_DIR,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return NPM_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenIdProvider:
    """One provider process on loopback; `accounts` are its users' claims by id."""

    def __init__(self, workdir: Path, accounts: dict[str, dict[str, Any]], **options: Any) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(
            2048, parameters={"kid": f"k{self.port}", "use": "sig", "alg": "RS256"}, private=True
        )
        self.accounts_path = workdir / f"accounts-{self.port}.json"
        self.options = options
        self.accounts: dict[str, dict[str, Any]] = {}
        self.set_account_claims(accounts)
        self.process: asyncio.subprocess.Process | None = None

    def set_account_claims(self, accounts: dict[str, dict[str, Any]]) -> None:
        """Add accounts or replace their claims (read by the provider at each login)."""
        self.accounts.update(accounts)
        self.accounts_path.write_text(json.dumps(self.accounts))

    async def start(self) -> None:
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "jwks": {"keys": [self.key.as_dict(private=True)]},
            "accounts": str(self.accounts_path),
            "conformIdTokenClaims": self.options.get("conform_id_token_claims", False),
        }
        path = self.workdir / f"op-{self.port}.json"
        path.write_text(json.dumps(config))
        self.process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(path),
            env={**os.environ, "OIDC_PROVIDER_DIR": str(ensure_installed())},
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        assert line.strip() == b"ready", line

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    async def register_client(self, redirect_uri: str, **metadata: Any) -> dict[str, Any]:
        """Dynamic client registration: the client id and secret (or key) to use."""
        body = {
            "redirect_uris": [redirect_uri],
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
            **metadata,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.issuer}/reg", json=body) as resp,
        ):
            assert resp.status == 201, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result

    def sign(self, claims: dict[str, Any]) -> str:
        """An id token signed with the provider's own key."""
        header = {"alg": "RS256", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key)


class Browser:
    """A person's browser: keeps cookies, follows redirects between the homeserver
    and the provider, and fills the provider's sign-in form."""

    def __init__(self, hs_base: str, providers: list[OpenIdProvider]) -> None:
        self.hs_base = hs_base
        self.hosts = {urlparse(hs_base).netloc} | {urlparse(p.issuer).netloc for p in providers}
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.session.close()

    async def browse(
        self, url: str, *, login: str | None = None, method: str = "GET", data: Any = None
    ) -> tuple[int, str, str]:
        """Follow redirects within the homeserver and the provider, signing in as
        `login` when the provider asks; (status, url, body) of the first page that is
        not a redirect, or (302, location, "") of a redirect leaving them."""
        for _ in range(20):
            async with self.session.request(method, url, data=data, allow_redirects=False) as resp:
                body = await resp.text()
                status = resp.status
                location = resp.headers.get("Location")
            method, data = "GET", None
            if location is not None and status in (301, 302, 303, 307):
                url = urljoin(url, location)
                if urlparse(url).netloc not in self.hosts:
                    return 302, url, ""
                continue
            if login is not None and '<input name="login">' in body:
                method, data = "POST", {"login": login}
                url = urljoin(url, f"{urlparse(url).path}/login")
                continue
            return status, url, body
        raise AssertionError("too many redirects")


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
