"""Registration over HTTP: user-interactive auth, username rules, registration
tokens (client API, admin API), and the 3pid routes we refuse honestly."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.conftest import PostgresServer
from tests.integration.conftest import CLIENT_V3, auth_header, register_user
from tests.integration.test_process import cli

ADMIN_TOKENS = "/_synapse/admin/v1/registration_tokens"
NO_LIMITS = {"rate_limits.enabled": False}


async def test_open_registration_with_dummy_stage(open_client: TestClient[Any, Any]) -> None:
    resp = await open_client.post(f"{CLIENT_V3}/register", json={"username": "alice"})
    assert resp.status == 401
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.dummy"]}]
    assert challenge["params"] == {}
    assert challenge["completed"] == []
    assert "errcode" not in challenge
    body = {
        "username": "alice",
        "password": "pw",
        "initial_device_display_name": "Phone",
        "device_id": "PHONE",
        "auth": {"type": "m.login.dummy", "session": challenge["session"]},
    }
    resp = await open_client.post(f"{CLIENT_V3}/register", json=body)
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["user_id"] == "@alice:test.local"
    assert result["device_id"] == "PHONE"
    assert "refresh_token" not in result
    whoami = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(result["access_token"])
    )
    assert await whoami.json() == {
        "user_id": "@alice:test.local",
        "device_id": "PHONE",
        "is_guest": False,
    }
    devices = await open_client.get(
        f"{CLIENT_V3}/devices", headers=auth_header(result["access_token"])
    )
    [device] = (await devices.json())["devices"]
    assert device["display_name"] == "Phone"
    # A finished session cannot be replayed.
    resp = await open_client.post(f"{CLIENT_V3}/register", json={**body, "username": "alice2"})
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_UNKNOWN"


async def test_dummy_stage_without_session_and_r0(open_client: TestClient[Any, Any]) -> None:
    resp = await open_client.post(
        "/_matrix/client/r0/register",
        json={"username": "bob", "password": "pw", "auth": {"type": "m.login.dummy"}},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["user_id"] == "@bob:test.local"


async def test_username_is_lowercased_and_generated(open_client: TestClient[Any, Any]) -> None:
    result = await register_user(open_client, "Carol")
    assert result["user_id"] == "@carol:test.local"
    resp = await open_client.post(
        f"{CLIENT_V3}/register", json={"password": "pw", "auth": {"type": "m.login.dummy"}}
    )
    assert resp.status == 200
    generated = (await resp.json())["user_id"]
    assert generated.startswith("@") and generated.endswith(":test.local")


async def test_taken_and_invalid_usernames(open_client: TestClient[Any, Any]) -> None:
    await register_user(open_client, "dave")
    resp = await open_client.post(f"{CLIENT_V3}/register", json={"username": "dave"})
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_USER_IN_USE"
    for bad in ("da ve", "dave!", "é", "x" * 300):
        resp = await open_client.post(f"{CLIENT_V3}/register", json={"username": bad})
        assert resp.status == 400, bad
        assert (await resp.json())["errcode"] == "M_INVALID_USERNAME"

    resp = await open_client.get(f"{CLIENT_V3}/register/available?username=dave")
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_USER_IN_USE"
    resp = await open_client.get(f"{CLIENT_V3}/register/available?username=eve")
    assert await resp.json() == {"available": True}
    resp = await open_client.get(f"{CLIENT_V3}/register/available?username=e%20ve")
    assert (await resp.json())["errcode"] == "M_INVALID_USERNAME"
    resp = await open_client.get(f"{CLIENT_V3}/register/available")
    assert (await resp.json())["errcode"] == "M_MISSING_PARAM"


async def test_inhibit_login_and_refresh_token(open_client: TestClient[Any, Any]) -> None:
    resp = await open_client.post(
        f"{CLIENT_V3}/register",
        json={"username": "fay", "inhibit_login": True, "auth": {"type": "m.login.dummy"}},
    )
    assert await resp.json() == {"user_id": "@fay:test.local", "home_server": "test.local"}
    result = await register_user(open_client, "gus", refresh_token=True)
    assert result["refresh_token"]
    assert result["expires_in_ms"] == 300_000


async def test_bad_bodies(open_client: TestClient[Any, Any]) -> None:
    resp = await open_client.post(f"{CLIENT_V3}/register", data=b"{not json")
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_NOT_JSON")
    for body in (
        {"username": 5},
        {"password": ["x"]},
        {"inhibit_login": "yes"},
        {"device_id": 7},
        {"auth": "dummy"},
        {"auth": {"type": 1}},
    ):
        resp = await open_client.post(f"{CLIENT_V3}/register", json=body)
        assert resp.status == 400, body
        assert (await resp.json())["errcode"] == "M_BAD_JSON", body
    resp = await open_client.post(
        f"{CLIENT_V3}/register", json={"auth": {"type": "m.login.password"}}
    )
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    resp = await open_client.post(
        f"{CLIENT_V3}/register", json={"auth": {"type": "m.login.dummy", "session": "nope"}}
    )
    assert resp.status == 400


async def test_registration_closed_and_guests(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**NO_LIMITS)
    resp = await client.post(f"{CLIENT_V3}/register", json={"username": "x"})
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    resp = await client.post(f"{CLIENT_V3}/register?kind=guest", json={})
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    resp = await client.post(f"{CLIENT_V3}/register?kind=robot", json={})
    assert resp.status == 400
    resp = await client.get(
        "/_matrix/client/v1/register/m.login.registration_token/validity?token=x"
    )
    assert resp.status == 403


async def test_threepid_registration_is_refused(open_client: TestClient[Any, Any]) -> None:
    for medium in ("email", "msisdn"):
        resp = await open_client.post(
            f"{CLIENT_V3}/register/{medium}/requestToken",
            json={"client_secret": "s", "email": "a@b.c", "send_attempt": 1},
        )
        assert resp.status == 403
        assert (await resp.json())["errcode"] == "M_THREEPID_DENIED"


async def _admin(client: TestClient[Any, Any]) -> dict[str, str]:
    hs = client.app[HOMESERVER]
    await hs.accounts.register_user("root", "rootpw", admin=True)
    resp = await client.post(
        f"{CLIENT_V3}/login",
        json={"type": "m.login.password", "user": "root", "password": "rootpw"},
    )
    return auth_header((await resp.json())["access_token"])


async def test_registration_token_flow(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(registration_requires_token=True, **NO_LIMITS)
    admin = await _admin(client)
    resp = await client.post(
        f"{ADMIN_TOKENS}/new", json={"token": "invite1", "uses_allowed": 1}, headers=admin
    )
    assert resp.status == 200, await resp.text()
    validity = "/_matrix/client/v1/register/m.login.registration_token/validity"
    resp = await client.get(f"{validity}?token=invite1")
    assert await resp.json() == {"valid": True}
    resp = await client.get(f"{validity}?token=other")
    assert await resp.json() == {"valid": False}

    resp = await client.post(f"{CLIENT_V3}/register", json={"username": "hal", "password": "pw"})
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.registration_token"]}]
    body = {
        "username": "hal",
        "password": "pw",
        "auth": {
            "type": "m.login.registration_token",
            "token": "wrong",
            "session": challenge["session"],
        },
    }
    resp = await client.post(f"{CLIENT_V3}/register", json=body)
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    body["auth"]["token"] = "invite1"
    resp = await client.post(f"{CLIENT_V3}/register", json=body)
    assert resp.status == 200, await resp.text()

    token = await (await client.get(f"{ADMIN_TOKENS}/invite1", headers=admin)).json()
    assert (token["pending"], token["completed"]) == (0, 1)
    resp = await client.get(f"{validity}?token=invite1")
    assert await resp.json() == {"valid": False}
    resp = await client.post(
        f"{CLIENT_V3}/register",
        json={
            "username": "ian",
            "auth": {"type": "m.login.registration_token", "token": "invite1"},
        },
    )
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"


async def test_admin_registration_token_api(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(open_registration=True, **NO_LIMITS)
    admin = await _admin(client)
    user = await register_user(client, "joe")

    resp = await client.get(ADMIN_TOKENS)
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    resp = await client.get(ADMIN_TOKENS, headers=auth_header(user["access_token"]))
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")

    resp = await client.post(f"{ADMIN_TOKENS}/new", json={"token": "t1"}, headers=admin)
    assert await resp.json() == {
        "token": "t1",
        "uses_allowed": None,
        "pending": 0,
        "completed": 0,
        "expiry_time": None,
    }
    resp = await client.post(f"{ADMIN_TOKENS}/new", json={"token": "t1"}, headers=admin)
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM")
    resp = await client.post(f"{ADMIN_TOKENS}/new", json={"length": 20}, headers=admin)
    generated = (await resp.json())["token"]
    assert len(generated) == 20
    past = int(time.time() * 1000) - 1000
    for bad in (
        {"token": "bad token"},
        {"length": 0},
        {"length": "5"},
        {"uses_allowed": -1},
        {"uses_allowed": True},
        {"expiry_time": past},
        {"expiry_time": "soon"},
    ):
        resp = await client.post(f"{ADMIN_TOKENS}/new", json=bad, headers=admin)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_INVALID_PARAM"), bad

    soon = int(time.time() * 1000) + 60_000
    resp = await client.put(
        f"{ADMIN_TOKENS}/t1", json={"uses_allowed": 0, "expiry_time": soon}, headers=admin
    )
    assert (await resp.json())["uses_allowed"] == 0
    assert (await resp.json())["expiry_time"] == soon
    resp = await client.put(f"{ADMIN_TOKENS}/t1", json={"expiry_time": None}, headers=admin)
    assert (await resp.json())["expiry_time"] is None
    assert (await resp.json())["uses_allowed"] == 0

    listed = await (await client.get(ADMIN_TOKENS, headers=admin)).json()
    assert sorted(t["token"] for t in listed["registration_tokens"]) == sorted([generated, "t1"])
    valid = await (await client.get(f"{ADMIN_TOKENS}?valid=true", headers=admin)).json()
    assert [t["token"] for t in valid["registration_tokens"]] == [generated]
    invalid = await (await client.get(f"{ADMIN_TOKENS}?valid=false", headers=admin)).json()
    assert [t["token"] for t in invalid["registration_tokens"]] == ["t1"]
    resp = await client.get(f"{ADMIN_TOKENS}?valid=maybe", headers=admin)
    assert resp.status == 400

    resp = await client.delete(f"{ADMIN_TOKENS}/t1", headers=admin)
    assert await resp.json() == {}
    for method in ("GET", "PUT", "DELETE"):
        resp = await client.request(method, f"{ADMIN_TOKENS}/t1", json={}, headers=admin)
        assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")


def test_registration_token_cli(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database()
    common = ("--data-dir", str(tmp_path / "d"), "--database-url", url)
    result = cli("registration-token", "create", "--uses", "3", *common)
    assert result.returncode == 0, result.stderr
    generated = result.stdout.strip()
    assert len(generated) == 16
    expiry = str(int(time.time() * 1000) + 3_600_000)
    result = cli("registration-token", "create", "--token", "party", "--expiry-ms", expiry, *common)
    assert result.stdout.strip() == "party"
    result = cli("registration-token", "create", "--token", "party", *common)
    assert result.returncode == 1
    assert "M_INVALID_PARAM" in result.stderr and "Traceback" not in result.stderr
    listing = cli("registration-token", "list", *common).stdout.splitlines()
    assert sorted(line.split("\t")[0] for line in listing) == sorted([generated, "party"])
    assert f"party\tuses_allowed=None pending=0 completed=0 expiry_time={expiry}" in listing
    assert cli("registration-token", "delete", "party", *common).returncode == 0
    result = cli("registration-token", "delete", "party", *common)
    assert result.returncode == 1 and "M_NOT_FOUND" in result.stderr
