"""Single sign-on through a real OpenID provider (oidc-provider on loopback): the
login as a person does it in a browser, then the client's token login; providers,
usernames, re-authentication, private-key clients and back-channel logout."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import nio
from joserfc.jwk import RSAKey

from homeserver.api.context import HOMESERVER
from homeserver.storage.accounts import accounts
from tests.integration.conftest import CLIENT_V3, auth_header, make_user
from tests.integration.sso.op import (
    CLIENT_URL,
    OpenIdProvider,
    Setup,
    sso_login,
    token_login,
)


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
            assert "To remove a device from your account, sign in again" in body
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


async def test_backchannel_logout_signs_out_the_sessions_devices(
    setup: Setup, op: OpenIdProvider
) -> None:
    """Signing out at the provider ends the devices signed in through that provider
    session, and only those."""
    op.set_account_claims({"sub-max": {"preferred_username": "max"}})
    entry = await setup.entry(
        op,
        "kc",
        client={
            "backchannel_logout_uri": f"{setup.base}/_synapse/client/oidc/backchannel_logout",
            "backchannel_logout_session_required": True,
        },
        backchannel_logout_enabled=True,
    )
    client = await setup.start(entry)
    browser = setup.browser()
    try:
        status, url, _ = await browser.browse(
            f"{setup.base}{CLIENT_V3}/login/sso/redirect/oidc-kc?redirectUrl={CLIENT_URL}",
            login="sub-max",
        )
        assert status == 302
        ended = await token_login(client, parse_qs(urlparse(url).query)["loginToken"][0])
        # Another browser is another session at the provider.
        kept = await token_login(client, await sso_login(setup, "oidc-kc", "sub-max"))
        _, _, page = await browser.browse(f"{op.issuer}/session/end")
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page)
        assert xsrf is not None, page
        status, _, _ = await browser.browse(
            f"{op.issuer}/session/end/confirm",
            method="POST",
            data={"xsrf": xsrf.group(1), "logout": "yes"},
        )
        assert status == 200
    finally:
        await browser.close()
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(ended["access_token"])
    )
    assert resp.status == 401
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(kept["access_token"])
    )
    assert resp.status == 200
    # A forged logout token (signed by someone else's key) ends nothing.
    forged = OpenIdProvider.__new__(OpenIdProvider)
    forged.key = RSAKey.generate_key(2048, parameters={"kid": op.key.kid}, private=True)
    token = forged.sign(
        {
            "iss": op.issuer,
            "aud": entry["client_id"],
            "iat": int(time.time()),
            "jti": "j",
            "sid": "any",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
    )
    resp = await client.post(
        "/_synapse/client/oidc/backchannel_logout", data={"logout_token": token}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


async def test_existing_users_are_reached_only_when_allowed(
    setup: Setup, op: OpenIdProvider, op2: OpenIdProvider
) -> None:
    """allow_existing_users links a first login to the account of the mapped name;
    without it, that name counts as taken."""
    op.set_account_claims({"sub-nina": {"preferred_username": "nina"}})
    op2.set_account_claims({"sub-nina": {"preferred_username": "nina"}})
    client = await setup.start(
        await setup.entry(op, "corp", allow_existing_users=True),
        await setup.entry(op2, "other", user_profile_method="userinfo_endpoint"),
    )
    nina, _ = await make_user(client, "nina")
    linked = await token_login(client, await sso_login(setup, "oidc-corp", "sub-nina"))
    assert linked["user_id"] == nina
    other = await token_login(client, await sso_login(setup, "oidc-other", "sub-nina"))
    assert other["user_id"] == "@nina1:test.local"


async def test_display_name_follows_the_provider_when_asked(
    setup: Setup, op: OpenIdProvider
) -> None:
    """sso.update_profile_information: each sign-in sets the provider's name."""
    op.set_account_claims({"sub-olga": {"preferred_username": "olga", "name": "Olga"}})
    client = await setup.start(
        await setup.entry(op, "kc"), **{"sso.update_profile_information": True}
    )
    await token_login(client, await sso_login(setup, "oidc-kc", "sub-olga"))
    op.set_account_claims({"sub-olga": {"preferred_username": "olga", "name": "Olga K."}})
    await token_login(client, await sso_login(setup, "oidc-kc", "sub-olga"))
    resp = await client.get(f"{CLIENT_V3}/profile/@olga:test.local/displayname")
    assert (await resp.json()) == {"displayname": "Olga K."}
