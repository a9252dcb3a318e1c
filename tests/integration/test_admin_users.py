"""The users part of the admin API, as operators' tools (synapse-admin) call it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


async def admin_call(
    client: Client,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": auth_header(token), "params": params or {}}
    if body is not None:
        kwargs["json"] = body
    resp = await client.request(method, path, **kwargs)
    return resp.status, await resp.json()


@pytest.fixture
async def server(homeserver_client: Callable[..., Any]) -> tuple[Client, str, str]:
    """A server with an admin and a normal user: (client, admin token, user token)."""
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    _, user_token = await make_user(client, "mallory")
    return client, admin_token, user_token


async def login(client: Client, user: str, password: str) -> int:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    resp = await client.post(f"{CLIENT_V3}/login", json=body)
    return resp.status


ENDPOINTS = [
    ("GET", f"{V2}/users", None),
    ("GET", f"{V2}/users/@root:test.local", None),
    ("PUT", f"{V2}/users/@new:test.local", {"password": "pw"}),
    ("POST", f"{V1}/reset_password/@root:test.local", {"new_password": "x"}),
    ("POST", f"{V1}/deactivate/@root:test.local", {}),
    ("GET", f"{V1}/users/@root:test.local/joined_rooms", None),
    ("GET", f"{V2}/users/@root:test.local/devices", None),
    ("DELETE", f"{V2}/users/@root:test.local/devices/TESTDEVICE", None),
    ("GET", f"{V1}/whois/@root:test.local", None),
    ("GET", f"{V1}/search_users/@root:test.local", None),
]


async def test_non_admins_are_refused_everywhere(server: tuple[Client, str, str]) -> None:
    client, admin_token, user_token = server
    for method, path, body in ENDPOINTS:
        status, answer = await admin_call(client, method, path, user_token, body)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), (method, path)
    resp = await client.get(f"{V2}/users")
    assert resp.status == 401
    # Nothing the refused calls asked for happened.
    status, _ = await admin_call(client, "GET", f"{V2}/users/@new:test.local", admin_token)
    assert status == 404
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@root:test.local/devices", admin_token
    )
    assert [d["device_id"] for d in devices["devices"]] == ["TESTDEVICE"]


async def test_create_user_then_log_in_and_read_it_back(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    status, created = await admin_call(
        client,
        "PUT",
        f"{V2}/users/@alice:test.local",
        admin_token,
        {"password": "alice pw", "displayname": "Alice", "admin": False},
    )
    assert status == 201, created
    assert created["name"] == "@alice:test.local"
    assert created["displayname"] == "Alice"
    assert created["admin"] is False and created["deactivated"] is False
    assert created["threepids"] == [] and created["external_ids"] == []
    assert await login(client, "alice", "alice pw") == 200
    assert await login(client, "alice", "wrong") == 403

    status, user = await admin_call(client, "GET", f"{V2}/users/@alice:test.local", admin_token)
    assert status == 200
    assert user["displayname"] == "Alice" and user["creation_ts"] > 0
    assert user["last_seen_ts"] is None or isinstance(user["last_seen_ts"], int)

    # A second PUT modifies: 200, and the new flag shows.
    status, changed = await admin_call(
        client,
        "PUT",
        f"{V2}/users/@alice:test.local",
        admin_token,
        {"admin": True, "displayname": "Alice A.", "avatar_url": "mxc://test.local/abc"},
    )
    assert status == 200, changed
    assert changed["admin"] is True
    assert changed["displayname"] == "Alice A."
    assert changed["avatar_url"] == "mxc://test.local/abc"
    status, profile = await admin_call(
        client, "GET", f"{CLIENT_V3}/profile/@alice:test.local", admin_token
    )
    assert profile == {"displayname": "Alice A.", "avatar_url": "mxc://test.local/abc"}


async def test_new_admin_flag_takes_effect(server: tuple[Client, str, str]) -> None:
    client, admin_token, user_token = server
    status, _ = await admin_call(client, "GET", f"{V2}/users", user_token)
    assert status == 403
    status, _ = await admin_call(
        client, "PUT", f"{V2}/users/@mallory:test.local", admin_token, {"admin": True}
    )
    assert status == 200
    status, _ = await admin_call(client, "GET", f"{V2}/users", user_token)
    assert status == 200
    # An admin cannot demote themself (and lock everyone out).
    status, body = await admin_call(
        client, "PUT", f"{V2}/users/@root:test.local", admin_token, {"admin": False}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_bad_input_is_refused(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    cases = [
        ("PUT", f"{V2}/users/@alice:test.local", {"admin": "yes"}),
        ("PUT", f"{V2}/users/@alice:test.local", {"password": 5}),
        ("PUT", f"{V2}/users/@alice:test.local", {"displayname": ["x"]}),
        ("PUT", f"{V2}/users/@bob:elsewhere.example", {"password": "pw"}),
        ("PUT", f"{V2}/users/not-a-user-id", {"password": "pw"}),
        ("POST", f"{V1}/deactivate/@root:test.local", {"erase": "please"}),
        ("POST", f"{V1}/reset_password/@root:test.local", {"new_password": 7}),
        ("PUT", f"{V2}/users/@alice:test.local", {"threepids": [{"medium": "msisdn"}]}),
        (
            "PUT",
            f"{V2}/users/@alice:test.local",
            {"threepids": [{"medium": "email", "address": "x"}]},
        ),
    ]
    for method, path, body in cases:
        status, answer = await admin_call(client, method, path, admin_token, body)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (path, body, answer)
    status, answer = await admin_call(
        client, "POST", f"{V1}/reset_password/@root:test.local", admin_token, {}
    )
    assert (status, answer["errcode"]) == (400, "M_MISSING_PARAM")
    for params in ({"from": "-1"}, {"limit": "x"}, {"dir": "up"}, {"order_by": "password"}):
        status, answer = await admin_call(client, "GET", f"{V2}/users", admin_token, params=params)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), params
    status, answer = await admin_call(client, "GET", f"{V2}/users/@alice:test.local", admin_token)
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_unknown_users_are_404(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    ghost = "@ghost:test.local"
    for method, path, body in [
        ("GET", f"{V2}/users/{ghost}", None),
        ("POST", f"{V1}/reset_password/{ghost}", {"new_password": "pw"}),
        ("POST", f"{V1}/deactivate/{ghost}", {}),
        ("GET", f"{V1}/users/{ghost}/joined_rooms", None),
        ("GET", f"{V2}/users/{ghost}/devices", None),
        ("DELETE", f"{V2}/users/{ghost}/devices/X", None),
        ("GET", f"{V1}/whois/{ghost}", None),
    ]:
        status, answer = await admin_call(client, method, path, admin_token, body)
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), path


async def test_list_paginates_and_filters(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    for name in ("carol", "dave", "erin", "frank"):
        await make_user(client, name)
    await admin_call(
        client, "PUT", f"{V2}/users/@dave:test.local", admin_token, {"displayname": "Dave Zed"}
    )
    await admin_call(client, "POST", f"{V1}/deactivate/@erin:test.local", admin_token, {})

    # Everyone active (root, mallory, carol, dave, frank), by name, two at a time.
    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        status, page = await admin_call(client, "GET", f"{V2}/users", admin_token, params=params)
        assert status == 200
        assert page["total"] == 5
        assert len(page["users"]) <= 2
        seen += [u["name"] for u in page["users"]]
        if "next_token" not in page:
            break
        params = {"limit": "2", "from": page["next_token"]}
    expected = sorted(f"@{n}:test.local" for n in ("root", "mallory", "carol", "dave", "frank"))
    assert seen == expected

    async def names(**query: str) -> list[str]:
        status, page = await admin_call(client, "GET", f"{V2}/users", admin_token, params=query)
        assert status == 200, page
        return [u["name"] for u in page["users"]]

    assert await names(dir="b") == expected[::-1]
    assert "@erin:test.local" in await names(deactivated="true")
    assert "@erin:test.local" not in await names()
    assert await names(admins="true") == ["@root:test.local"]
    assert "@root:test.local" not in await names(admins="false")
    assert await names(name="zed") == ["@dave:test.local"]  # by display name
    assert await names(name="FRA") == ["@frank:test.local"]  # by localpart, any case
    assert await names(user_id="@carol:") == ["@carol:test.local"]
    assert await names(name="%") == []  # wildcards are literal
    ordered = await names(order_by="displayname")
    assert ordered[0] == "@dave:test.local"  # the only display name sorts before none


async def test_deactivation_logs_out_and_blocks_login(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    await admin_call(client, "PUT", f"{V2}/users/@gina:test.local", admin_token, {"password": "g"})
    assert await login(client, "gina", "g") == 200
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@gina:test.local/devices", admin_token
    )
    assert devices["total"] == 1
    token_resp = await client.post(
        f"{CLIENT_V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "gina"},
            "password": "g",
        },
    )
    gina_token = (await token_resp.json())["access_token"]

    status, body = await admin_call(
        client, "POST", f"{V1}/deactivate/@gina:test.local", admin_token, {"erase": True}
    )
    assert status == 200 and body == {"id_server_unbind_result": "success"}
    assert await login(client, "gina", "g") == 403
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(gina_token))
    assert resp.status == 401
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@gina:test.local/devices", admin_token
    )
    assert devices == {"devices": [], "total": 0}
    status, user = await admin_call(client, "GET", f"{V2}/users/@gina:test.local", admin_token)
    assert user["deactivated"] is True and user["erased"] is True


async def test_deactivate_through_put_and_reactivate(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    await admin_call(client, "PUT", f"{V2}/users/@hal:test.local", admin_token, {"password": "h"})
    status, user = await admin_call(
        client, "PUT", f"{V2}/users/@hal:test.local", admin_token, {"deactivated": True}
    )
    assert status == 200 and user["deactivated"] is True
    assert await login(client, "hal", "h") == 403
    status, body = await admin_call(
        client, "PUT", f"{V2}/users/@hal:test.local", admin_token, {"deactivated": False}
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, user = await admin_call(
        client,
        "PUT",
        f"{V2}/users/@hal:test.local",
        admin_token,
        {"deactivated": False, "password": "h2"},
    )
    assert status == 200 and user["deactivated"] is False
    assert await login(client, "hal", "h2") == 200


async def test_password_reset_logs_out_unless_asked_not_to(
    server: tuple[Client, str, str],
) -> None:
    client, admin_token, user_token = server
    status, _ = await admin_call(
        client,
        "POST",
        f"{V1}/reset_password/@mallory:test.local",
        admin_token,
        {"new_password": "kept", "logout_devices": False},
    )
    assert status == 200
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(user_token))
    assert resp.status == 200
    assert await login(client, "mallory", "kept") == 200

    status, _ = await admin_call(
        client,
        "POST",
        f"{V1}/reset_password/@mallory:test.local",
        admin_token,
        {"new_password": "new"},
    )
    assert status == 200
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(user_token))
    assert resp.status == 401
    assert await login(client, "mallory", "kept") == 403
    assert await login(client, "mallory", "new") == 200

    # A password set through PUT logs out too.
    status, _ = await admin_call(
        client, "PUT", f"{V2}/users/@mallory:test.local", admin_token, {"password": "third"}
    )
    assert status == 200
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@mallory:test.local/devices", admin_token
    )
    assert devices["total"] == 0


async def test_devices_list_and_delete(server: tuple[Client, str, str]) -> None:
    client, admin_token, user_token = server
    await client.get(
        f"{CLIENT_V3}/account/whoami",
        headers={**auth_header(user_token), "User-Agent": "pytest-agent"},
    )
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@mallory:test.local/devices", admin_token
    )
    assert status == 200 and devices["total"] == 1
    device = devices["devices"][0]
    assert device["device_id"] == "TESTDEVICE"
    assert device["user_id"] == "@mallory:test.local"
    assert device["last_seen_user_agent"] == "pytest-agent"

    status, whois = await admin_call(client, "GET", f"{V1}/whois/@mallory:test.local", admin_token)
    assert status == 200 and whois["user_id"] == "@mallory:test.local"
    connection = whois["devices"][""]["sessions"][0]["connections"][0]
    assert connection["user_agent"] == "pytest-agent" and connection["last_seen"] > 0

    status, body = await admin_call(
        client, "DELETE", f"{V2}/users/@mallory:test.local/devices/TESTDEVICE", admin_token
    )
    assert (status, body) == (200, {})
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(user_token))
    assert resp.status == 401
    status, devices = await admin_call(
        client, "GET", f"{V2}/users/@mallory:test.local/devices", admin_token
    )
    assert devices == {"devices": [], "total": 0}


async def test_client_whois_for_self_or_admin(server: tuple[Client, str, str]) -> None:
    client, admin_token, user_token = server
    path = f"{CLIENT_V3}/admin/whois/@mallory:test.local"
    status, own = await admin_call(client, "GET", path, user_token)
    assert status == 200 and "TESTDEVICE" in own["devices"]
    status, _ = await admin_call(client, "GET", path, admin_token)
    assert status == 200
    status, other = await admin_call(
        client, "GET", f"{CLIENT_V3}/admin/whois/@root:test.local", user_token
    )
    assert (status, other["errcode"]) == (403, "M_FORBIDDEN")


async def test_joined_rooms(server: tuple[Client, str, str]) -> None:
    client, admin_token, _ = server
    owner = await RoomUser.make(client, "owner")
    first = await owner.create_room()
    second = await owner.create_room()
    left = await owner.create_room()
    await owner.leave(left)
    status, body = await admin_call(
        client, "GET", f"{V1}/users/{owner.user_id}/joined_rooms", admin_token
    )
    assert status == 200
    assert body == {"joined_rooms": sorted([first, second]), "total": 2}


async def test_admins_set_and_find_email_addresses(server: tuple[Client, str, str]) -> None:
    """Synapse's `threepids` in PUT /users and the lookup by address, as synapse-admin
    uses them: an admin gives an account its email address, which then logs it in."""
    client, admin_token, _ = server
    body = {"password": "pw", "threepids": [{"medium": "email", "address": "Ann@Example.org"}]}
    status, created = await admin_call(
        client, "PUT", f"{V2}/users/@ann:test.local", admin_token, body
    )
    assert status == 201
    assert [(t["medium"], t["address"]) for t in created["threepids"]] == [
        ("email", "ann@example.org")
    ]
    status, found = await admin_call(
        client, "GET", f"{V1}/threepid/email/users/ann@example.org", admin_token
    )
    assert (status, found) == (200, {"user_id": "@ann:test.local"})
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "ann@example.org"},
        "password": "pw",
    }
    resp = await client.post(f"{CLIENT_V3}/login", json=login)
    assert resp.status == 200
    # Another account cannot be given the same address.
    body = {"password": "pw", "threepids": [{"medium": "email", "address": "ann@example.org"}]}
    status, answer = await admin_call(
        client, "PUT", f"{V2}/users/@bea:test.local", admin_token, body
    )
    assert (status, answer["errcode"]) == (400, "M_THREEPID_IN_USE")
    status, changed = await admin_call(
        client, "PUT", f"{V2}/users/@ann:test.local", admin_token, {"threepids": []}
    )
    assert (status, changed["threepids"]) == (200, [])
    status, found = await admin_call(
        client, "GET", f"{V1}/threepid/email/users/ann@example.org", admin_token
    )
    assert status == 404


async def test_legacy_search_users(server: tuple[Client, str, str]) -> None:
    """Synapse's older search: by part of the user id, deactivated accounts included."""
    client, admin_token, _ = server
    await make_user(client, "alice.smith")
    await make_user(client, "malice")
    path = f"{V1}/search_users/@root:test.local"
    status, body = await admin_call(
        client, "POST", f"{V1}/deactivate/@malice:test.local", admin_token, {}
    )
    assert status == 200, body
    status, body = await admin_call(client, "GET", path, admin_token, params={"term": "LICE"})
    assert status == 200
    assert body == [
        {"name": "@alice.smith:test.local", "is_guest": False, "admin": False, "user_type": None},
        {"name": "@malice:test.local", "is_guest": False, "admin": False, "user_type": None},
    ]
    status, body = await admin_call(client, "GET", path, admin_token, params={"term": "%"})
    assert (status, body) == (200, [])
    status, body = await admin_call(client, "GET", path, admin_token)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await admin_call(
        client, "GET", f"{V1}/search_users/@x:elsewhere.org", admin_token, params={"term": "a"}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
