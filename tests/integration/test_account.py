"""The account over HTTP: whoami, password change, deactivation, 3pid endpoints."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import CLIENT_V3, auth_header, login_user, register_user


def password_auth(password: str = "pw", user: str = "alice") -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }


async def test_whoami(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw", device_id="DEV")
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(alice["access_token"])
    )
    assert await resp.json() == {
        "user_id": "@alice:test.local",
        "device_id": "DEV",
        "is_guest": False,
    }


async def test_change_password_logs_out_other_devices(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "old")
    other = await login_user(open_client, "alice", "old")
    headers = auth_header(alice["access_token"])
    url = f"{CLIENT_V3}/account/password"
    resp = await open_client.post(url, json={"new_password": "new"}, headers=headers)
    assert resp.status == 401
    for bad in ({"new_password": 5}, {"new_password": "x", "logout_devices": "no"}, {}):
        resp = await open_client.post(url, json=bad, headers=headers)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON"), bad
    resp = await open_client.post(
        url, json={"new_password": "new", "auth": password_auth("wrong")}, headers=headers
    )
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_FORBIDDEN")
    resp = await open_client.post(
        url, json={"new_password": "new", "auth": password_auth("old")}, headers=headers
    )
    assert (resp.status, await resp.json()) == (200, {})

    resp = await open_client.get(f"{CLIENT_V3}/account/whoami", headers=headers)
    assert resp.status == 200
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(other["access_token"])
    )
    assert resp.status == 401
    resp = await open_client.post(
        f"{CLIENT_V3}/login", json={"type": "m.login.password", "user": "alice", "password": "old"}
    )
    assert resp.status == 403
    await login_user(open_client, "alice", "new")


async def test_change_password_keeping_devices(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "old")
    other = await login_user(open_client, "alice", "old")
    resp = await open_client.post(
        f"{CLIENT_V3}/account/password",
        json={"new_password": "new", "logout_devices": False, "auth": password_auth("old")},
        headers=auth_header(alice["access_token"]),
    )
    assert resp.status == 200
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(other["access_token"])
    )
    assert resp.status == 200


async def test_uia_session_acts_on_the_final_request_body(
    open_client: TestClient[Any, Any],
) -> None:
    """A session binds the operation, not the body: the last stage may carry a
    parameter the first request did not, and that request is the one acted on."""
    alice = await register_user(open_client, "alice", "old")
    other = await login_user(open_client, "alice", "old")
    headers = auth_header(alice["access_token"])
    url = f"{CLIENT_V3}/account/password"
    resp = await open_client.post(url, json={"new_password": "first"}, headers=headers)
    assert resp.status == 401
    session = (await resp.json())["session"]
    resp = await open_client.post(
        url,
        json={
            "new_password": "new",
            "logout_devices": False,
            "auth": {**password_auth("old"), "session": session},
        },
        headers=headers,
    )
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(other["access_token"])
    )
    assert resp.status == 200
    await login_user(open_client, "alice", "new")
    # The session was for this user and endpoint only: another endpoint refuses it.
    resp = await open_client.post(url, json={"new_password": "x"}, headers=headers)
    session = (await resp.json())["session"]
    resp = await open_client.post(
        f"{CLIENT_V3}/account/deactivate",
        json={"auth": {**password_auth("new"), "session": session}},
        headers=headers,
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_deactivate(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw")
    headers = auth_header(alice["access_token"])
    url = f"{CLIENT_V3}/account/deactivate"
    resp = await open_client.post(url, json={"erase": "yes"}, headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    resp = await open_client.post(url, json={"erase": True}, headers=headers)
    assert resp.status == 401
    session = (await resp.json())["session"]
    resp = await open_client.post(
        url,
        json={"erase": True, "auth": {**password_auth(), "session": session}},
        headers=headers,
    )
    assert (resp.status, await resp.json()) == (200, {"id_server_unbind_result": "no-support"})
    resp = await open_client.get(f"{CLIENT_V3}/account/whoami", headers=headers)
    assert resp.status == 401
    resp = await open_client.post(
        f"{CLIENT_V3}/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
    )
    # The password is forgotten with the account, so the login fails as an unknown one.
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    hs = open_client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT deactivated, erased FROM users WHERE user_id = '@alice:test.local'"
        )
        assert await cur.fetchone() == (True, True)
    # The name stays taken.
    resp = await open_client.get(f"{CLIENT_V3}/register/available?username=alice")
    assert (await resp.json())["errcode"] == "M_USER_IN_USE"


async def test_deactivated_user_cannot_log_in(open_client: TestClient[Any, Any]) -> None:
    """A deactivated account that still has a password hash (e.g. deactivated by an
    admin tool) is told so, once the password was right."""
    await register_user(open_client, "alice", "pw")
    hs = open_client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        await conn.execute(
            "UPDATE users SET deactivated = TRUE WHERE user_id = '@alice:test.local'"
        )
    resp = await open_client.post(
        f"{CLIENT_V3}/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_USER_DEACTIVATED")
    resp = await open_client.post(
        f"{CLIENT_V3}/login", json={"type": "m.login.password", "user": "alice", "password": "x"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_threepid_endpoints(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw")
    headers = auth_header(alice["access_token"])
    resp = await open_client.get(f"{CLIENT_V3}/account/3pid", headers=headers)
    assert await resp.json() == {"threepids": []}
    resp = await open_client.get(f"{CLIENT_V3}/account/3pid")
    assert resp.status == 401
    request_token = {"client_secret": "s", "email": "a@b.c", "send_attempt": 1}
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("account/3pid/email/requestToken", request_token, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
        ("account/3pid/msisdn/requestToken", request_token, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"),
        ("account/password/email/requestToken", request_token, 400, "M_THREEPID_NOT_FOUND"),
        ("account/3pid/add", {"sid": "1", "client_secret": "s"}, 400, "M_THREEPID_AUTH_FAILED"),
        ("account/3pid/add", {"sid": 1}, 400, "M_BAD_JSON"),
        (
            "account/3pid/bind",
            {"sid": "1", "client_secret": "s", "id_server": "x", "id_access_token": "t"},
            400,
            "M_SERVER_NOT_TRUSTED",
        ),
        ("account/3pid", {"three_pid_creds": {}}, 400, "M_SERVER_NOT_TRUSTED"),
        ("account/3pid/unbind", {"medium": "email", "address": "a@b.c"}, 200, None),
        ("account/3pid/delete", {"medium": "email", "address": "a@b.c"}, 200, None),
        ("account/3pid/delete", {"medium": "email"}, 400, "M_BAD_JSON"),
    ]
    for path, body, status, errcode in cases:
        resp = await open_client.post(f"{CLIENT_V3}/{path}", json=body, headers=headers)
        result = await resp.json()
        assert (resp.status, result.get("errcode")) == (status, errcode), path
        if status == 200:
            assert result == {"id_server_unbind_result": "no-support"}
