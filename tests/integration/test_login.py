"""Logging in and out over HTTP: identifiers, passwords, login tokens, refresh
tokens, token failures, and the r0 alias."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, auth_header, login_user, register_user


async def post_login(client: TestClient[Any, Any], body: Any, prefix: str = CLIENT_V3) -> Any:
    resp = await client.post(f"{prefix}/login", json=body)
    return resp.status, await resp.json()


async def test_login_flows(open_client: TestClient[Any, Any]) -> None:
    for prefix in (CLIENT_V3, "/_matrix/client/r0"):
        resp = await open_client.get(f"{prefix}/login")
        assert await resp.json() == {
            "flows": [
                {"type": "m.login.password"},
                {"type": "m.login.token", "get_login_token": True},
            ]
        }


@pytest.mark.parametrize(
    "body",
    [
        {"identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "Alice"}},
        {"identifier": {"type": "m.id.user", "user": "@alice:test.local"}},
        {"user": "alice"},
        {"user": "@alice:test.local"},
    ],
)
async def test_password_login_identifiers(
    open_client: TestClient[Any, Any], body: dict[str, Any]
) -> None:
    await register_user(open_client, "alice", "pw")
    status, result = await post_login(
        open_client, {"type": "m.login.password", "password": "pw", **body}
    )
    assert status == 200, result
    assert result["user_id"] == "@alice:test.local"
    assert result["device_id"] and result["access_token"]
    assert "refresh_token" not in result and "expires_in_ms" not in result


async def test_login_over_r0(open_client: TestClient[Any, Any]) -> None:
    await register_user(open_client, "alice", "pw")
    status, result = await post_login(
        open_client,
        {"type": "m.login.password", "user": "alice", "password": "pw"},
        prefix="/_matrix/client/r0",
    )
    assert status == 200
    resp = await open_client.get(
        "/_matrix/client/r0/account/whoami", headers=auth_header(result["access_token"])
    )
    assert (await resp.json())["user_id"] == "@alice:test.local"


async def test_login_failures(open_client: TestClient[Any, Any]) -> None:
    await register_user(open_client, "alice", "pw")
    cases: list[tuple[Any, int, str]] = [
        ({"type": "m.login.password", "user": "alice", "password": "wrong"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "user": "nobody", "password": "pw"}, 403, "M_FORBIDDEN"),
        (
            {"type": "m.login.password", "user": "@alice:elsewhere", "password": "pw"},
            403,
            "M_FORBIDDEN",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"},
                "password": "pw",
            },
            403,
            "M_FORBIDDEN",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.phone", "country": "GB", "phone": "123"},
                "password": "pw",
            },
            403,
            "M_FORBIDDEN",
        ),
        (
            {"type": "m.login.password", "medium": "email", "address": "a@b.c", "password": "pw"},
            403,
            "M_FORBIDDEN",
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "m.id.nope"}, "password": "pw"},
            400,
            "M_UNKNOWN",
        ),
        ({"type": "m.login.sso"}, 400, "M_UNKNOWN"),
        ({"type": "m.login.password", "password": "pw"}, 400, "M_MISSING_PARAM"),
        ({"type": 5}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "user": "alice", "password": 5}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": "alice", "password": "pw"}, 400, "M_BAD_JSON"),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": 1},
                "password": "pw",
            },
            400,
            "M_BAD_JSON",
        ),
        (
            {"type": "m.login.password", "user": "alice", "password": "pw", "refresh_token": "y"},
            400,
            "M_BAD_JSON",
        ),
        (
            {"type": "m.login.password", "user": "alice", "password": "pw", "device_id": 3},
            400,
            "M_BAD_JSON",
        ),
        ({"type": "m.login.token", "token": "nope"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.token"}, 400, "M_BAD_JSON"),
        ([1, 2], 400, "M_BAD_JSON"),
    ]
    for body, status, errcode in cases:
        got_status, result = await post_login(open_client, body)
        assert (got_status, result.get("errcode")) == (status, errcode), body
    resp = await open_client.post(f"{CLIENT_V3}/login", data=b"{")
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_NOT_JSON")
    resp = await open_client.post(f"{CLIENT_V3}/login", data=b"")
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_NOT_JSON")


async def test_too_large_body(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(max_request_size=1024, **{"rate_limits.enabled": False})
    resp = await client.post(
        f"{CLIENT_V3}/login", json={"type": "m.login.password", "password": "x" * 4096}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (413, "M_TOO_LARGE")


async def test_token_failures(open_client: TestClient[Any, Any]) -> None:
    resp = await open_client.get(f"{CLIENT_V3}/account/whoami")
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    resp = await open_client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header("bogus"))
    body = await resp.json()
    assert (resp.status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", False)
    resp = await open_client.get(f"{CLIENT_V3}/account/whoami?access_token=bogus")
    assert resp.status == 401
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers={"Authorization": "Basic abc"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_same_device_id_replaces_tokens(open_client: TestClient[Any, Any]) -> None:
    await register_user(open_client, "alice", "pw", device_id="DESK")
    first = await login_user(open_client, "alice", "pw", device_id="LAPTOP")
    second = await login_user(open_client, "alice", "pw", device_id="LAPTOP")
    assert second["device_id"] == "LAPTOP"
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(first["access_token"])
    )
    assert resp.status == 401
    resp = await open_client.get(
        f"{CLIENT_V3}/devices", headers=auth_header(second["access_token"])
    )
    ids = [d["device_id"] for d in (await resp.json())["devices"]]
    assert ids == ["DESK", "LAPTOP"]


async def test_logout_and_logout_all(open_client: TestClient[Any, Any]) -> None:
    one = await register_user(open_client, "alice", "pw")
    two = await login_user(open_client, "alice", "pw")
    three = await login_user(open_client, "alice", "pw")
    resp = await open_client.post(f"{CLIENT_V3}/logout", headers=auth_header(one["access_token"]))
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(one["access_token"])
    )
    assert resp.status == 401
    resp = await open_client.get(f"{CLIENT_V3}/devices", headers=auth_header(two["access_token"]))
    assert len((await resp.json())["devices"]) == 2
    resp = await open_client.post(
        "/_matrix/client/r0/logout/all", headers=auth_header(two["access_token"])
    )
    assert resp.status == 200
    for session in (two, three):
        resp = await open_client.get(
            f"{CLIENT_V3}/account/whoami", headers=auth_header(session["access_token"])
        )
        assert resp.status == 401
    resp = await open_client.post(f"{CLIENT_V3}/logout")
    assert resp.status == 401


async def test_refresh_tokens(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        open_registration=True, access_token_lifetime_ms=1000, **{"rate_limits.enabled": False}
    )
    await register_user(client, "alice", "pw")
    first = await login_user(client, "alice", "pw", refresh_token=True)
    assert first["expires_in_ms"] == 1000

    resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": first["refresh_token"]})
    second = await resp.json()
    assert resp.status == 200 and second["expires_in_ms"] == 1000
    # The old refresh token still works until the new pair is used (the client may
    # have lost the response); using it again replaces the unused pair.
    resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": first["refresh_token"]})
    third = await resp.json()
    assert resp.status == 200
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(second["access_token"])
    )
    assert resp.status == 401
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(third["access_token"])
    )
    assert resp.status == 200
    # The new access token was used: the old refresh token is gone.
    for old in (first["refresh_token"], second["refresh_token"]):
        resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": old})
        assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")

    await asyncio.sleep(1.1)
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(third["access_token"])
    )
    body = await resp.json()
    assert (resp.status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)
    resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": third["refresh_token"]})
    fourth = await resp.json()
    assert resp.status == 200
    resp = await client.post(
        f"{CLIENT_V3}/refresh", json={"refresh_token": fourth["refresh_token"]}
    )
    assert resp.status == 200
    # Using the newer refresh token retired the one before it.
    resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": third["refresh_token"]})
    assert resp.status == 401

    for body in ({}, {"refresh_token": 5}, {"refresh_token": ""}):
        resp = await client.post(f"{CLIENT_V3}/refresh", json=body)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    resp = await client.post(f"{CLIENT_V3}/refresh", json={"refresh_token": "nope"})
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_login_token(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw")
    headers = auth_header(alice["access_token"])
    url = "/_matrix/client/v1/login/get_token"
    resp = await open_client.post(url, json={}, headers=headers)
    assert resp.status == 401
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
        "session": challenge["session"],
    }
    resp = await open_client.post(url, json={"auth": auth}, headers=headers)
    assert resp.status == 200, await resp.text()
    issued = await resp.json()
    assert issued["expires_in_ms"] == 120_000
    status, result = await post_login(
        open_client, {"type": "m.login.token", "token": issued["login_token"]}
    )
    assert status == 200 and result["user_id"] == "@alice:test.local"
    assert result["device_id"] != alice["device_id"]
    # Single use.
    status, result = await post_login(
        open_client, {"type": "m.login.token", "token": issued["login_token"]}
    )
    assert (status, result["errcode"]) == (403, "M_FORBIDDEN")


async def test_nul_characters_are_refused(open_client: TestClient[Any, Any]) -> None:
    """PostgreSQL text cannot hold NUL: such input is a 400, never a 500."""
    alice = await register_user(open_client, "alice", "pw")
    headers = auth_header(alice["access_token"])
    login = {"type": "m.login.password", "password": "pw"}
    for body in (
        {**login, "user": "al\x00ice"},
        {**login, "user": "alice", "device_id": "D\x00"},
        {**login, "user": "alice", "initial_device_display_name": "\x00"},
    ):
        status, result = await post_login(open_client, body)
        # Refused for every endpoint as they are read, as the JSON body's fault.
        assert (status, result["errcode"]) == (400, "M_BAD_JSON"), body
    resp = await open_client.post(
        f"{CLIENT_V3}/register", json={"auth": {"type": "m.login.dummy", "session": "\x00"}}
    )
    assert resp.status == 400
    resp = await open_client.get(f"{CLIENT_V3}/devices/%00", headers=headers)
    assert resp.status == 400
    resp = await open_client.put(
        f"{CLIENT_V3}/devices/{alice['device_id']}", json={"display_name": "\x00"}, headers=headers
    )
    assert resp.status == 400
    resp = await open_client.post(
        f"{CLIENT_V3}/delete_devices",
        json={
            "devices": ["\x00"],
            "auth": {"type": "m.login.password", "user": "alice", "password": "pw"},
        },
        headers=headers,
    )
    assert resp.status == 400


async def test_login_attempts_are_rate_limited_per_address(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client(
        open_registration=True,
        **{"rate_limits.login.burst": 3, "rate_limits.login.per_second": 0.001},
    )
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "nobody"},
        "password": "wrong",
    }
    statuses = [(await client.post(f"{CLIENT_V3}/login", json=body)).status for _ in range(3)]
    assert statuses == [403, 403, 403]
    resp = await client.post(f"{CLIENT_V3}/login", json=body)
    assert resp.status == 429
    error = await resp.json()
    assert error["errcode"] == "M_LIMIT_EXCEEDED"
    assert error["retry_after_ms"] > 0
