"""Moderation through the admin API, and what it means for the user: a suspended user
reads but cannot send, a locked one cannot log in nor use a session, a shadow-banned
one is told their messages went out while nobody receives them; rate-limit overrides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import (
    CLIENT_V3,
    RoomUser,
    auth_header,
    login_user,
    make_user,
    register_user,
)
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


@pytest.fixture
async def server(homeserver_client: Callable[..., Any]) -> tuple[Client, str]:
    client: Client = await homeserver_client(open_registration=True)
    _, admin_token = await make_user(client, "root", admin=True)
    return client, admin_token


async def messages(user: RoomUser, room_id: str) -> list[str]:
    status, page = await user.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert status == 200, page
    return [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]


async def test_suspended_user_reads_but_cannot_send(server: tuple[Client, str]) -> None:
    client, admin_token = server
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    status, body = await admin_call(
        client, "PUT", f"{V1}/suspend/{bob.user_id}", admin_token, {"suspend": True}
    )
    assert (status, body) == (200, {f"user_{bob.user_id}_suspended": True})
    await alice.say(room_id, "still readable")
    resp = await client.put(
        f"{CLIENT_V3}/rooms/{room_id}/send/m.room.message/s1",
        json={"msgtype": "m.text", "body": "no"},
        headers=bob.headers,
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_USER_SUSPENDED")
    assert "still readable" in await messages(bob, room_id)
    other = await alice.create_room(preset="public_chat")
    resp = await client.post(f"{CLIENT_V3}/rooms/{other}/join", json={}, headers=bob.headers)
    assert resp.status == 403
    # The spec's endpoint reads and lifts it.
    status, body = await admin_call(
        client, "GET", f"/_matrix/client/v1/admin/suspend/{bob.user_id}", admin_token
    )
    assert (status, body) == (200, {"suspended": True})
    status, _ = await admin_call(
        client,
        "PUT",
        f"/_matrix/client/v1/admin/suspend/{bob.user_id}",
        admin_token,
        {"suspended": False},
    )
    assert status == 200
    await bob.say(room_id, "back")
    assert "back" in await messages(alice, room_id)


async def test_locked_user_cannot_log_in_nor_use_a_session(server: tuple[Client, str]) -> None:
    client, admin_token = server
    carol = await register_user(client, "carol")
    headers = auth_header(carol["access_token"])
    path = f"/_matrix/client/v1/admin/lock/{carol['user_id']}"
    status, body = await admin_call(client, "PUT", path, admin_token, {"locked": True})
    assert (status, body) == (200, {"locked": True})
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=headers)
    body = await resp.json()
    assert (resp.status, body["errcode"], body["soft_logout"]) == (401, "M_USER_LOCKED", True)
    resp = await client.post(
        f"{CLIENT_V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "carol"},
            "password": "secret pw",
        },
    )
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_USER_LOCKED")
    status, user = await admin_call(client, "GET", f"{V2}/users/{carol['user_id']}", admin_token)
    assert user["locked"] is True
    # Synapse's way to unlock: PUT /v2/users with locked false.
    status, user = await admin_call(
        client, "PUT", f"{V2}/users/{carol['user_id']}", admin_token, {"locked": False}
    )
    assert (status, user["locked"]) == (200, False)
    await login_user(client, "carol")
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=headers)
    assert resp.status == 200


async def test_shadow_banned_user_sees_success_while_nobody_receives(
    server: tuple[Client, str],
) -> None:
    client, admin_token = server
    alice = await RoomUser.make(client, "alice")
    eve = await RoomUser.make(client, "eve")
    room_id = await alice.create_room(preset="public_chat")
    await eve.join(room_id)
    status, _ = await admin_call(
        client, "POST", f"{V1}/users/{eve.user_id}/shadow_ban", admin_token
    )
    assert status == 200
    event_id = await eve.say(room_id, "spam")
    assert event_id.startswith("$")
    assert "spam" not in await messages(alice, room_id)
    assert "spam" not in await messages(eve, room_id)
    status, user = await admin_call(client, "GET", f"{V2}/users/{eve.user_id}", admin_token)
    assert user["shadow_banned"] is True
    await admin_call(client, "DELETE", f"{V1}/users/{eve.user_id}/shadow_ban", admin_token)
    await eve.say(room_id, "hello")
    assert "hello" in await messages(alice, room_id)


async def test_override_ratelimit_lifts_the_message_limit(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(
        **{"rate_limits.message.per_second": 0.01, "rate_limits.message.burst": 2}
    )
    _, admin_token = await make_user(client, "root", admin=True)
    dave = await RoomUser.make(client, "dave")
    room_id = await dave.create_room()
    path = f"{V1}/users/{dave.user_id}/override_ratelimit"
    status, body = await admin_call(client, "GET", path, admin_token)
    assert (status, body) == (200, {})
    status, body = await admin_call(client, "POST", path, admin_token, {})
    assert body == {"messages_per_second": 0, "burst_count": 0}
    for n in range(5):
        await dave.say(room_id, f"m{n}")
    status, _ = await admin_call(client, "DELETE", path, admin_token)
    assert status == 200
    statuses = []
    for n in range(3):
        resp = await client.put(
            f"{CLIENT_V3}/rooms/{room_id}/send/m.room.message/x{n}",
            json={"msgtype": "m.text", "body": "x"},
            headers=dave.headers,
        )
        statuses.append(resp.status)
    assert 429 in statuses


async def test_account_reads_devices_and_login_as(server: tuple[Client, str]) -> None:
    client, admin_token = server
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example", {"a": 1})
    await alice.ok("PUT", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.x", {"b": 2})
    user = f"{V1}/users/{alice.user_id}"

    status, body = await admin_call(client, "GET", f"{user}/memberships", admin_token)
    assert (status, body["memberships"]) == (200, {room_id: "join"})
    status, body = await admin_call(client, "GET", f"{user}/accountdata", admin_token)
    assert body["account_data"]["global"]["org.example"] == {"a": 1}
    assert body["account_data"]["rooms"][room_id]["m.x"] == {"b": 2}
    status, body = await admin_call(client, "GET", f"{user}/pushers", admin_token)
    assert (status, body) == (200, {"pushers": [], "total": 0})
    status, body = await admin_call(client, "GET", f"{user}/admin", admin_token)
    assert (status, body) == (200, {"admin": False})

    devices = f"{V2}/users/{alice.user_id}/devices"
    await admin_call(client, "POST", devices, admin_token, {"device_id": "NEWDEV"})
    await admin_call(client, "PUT", f"{devices}/NEWDEV", admin_token, {"display_name": "Tab"})
    status, listed = await admin_call(client, "GET", devices, admin_token)
    names = {d["device_id"]: d["display_name"] for d in listed["devices"]}
    assert names["NEWDEV"] == "Tab"
    status, _ = await admin_call(
        client,
        "POST",
        f"{V2}/users/{alice.user_id}/delete_devices",
        admin_token,
        {"devices": ["NEWDEV", "TESTDEVICE"]},
    )
    assert status == 200
    status, listed = await admin_call(client, "GET", devices, admin_token)
    assert listed["devices"] == []
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=alice.headers)
    assert resp.status == 401

    status, body = await admin_call(client, "POST", f"{user}/login", admin_token, {})
    assert status == 200
    resp = await client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(body["access_token"])
    )
    assert (await resp.json())["user_id"] == alice.user_id
    # The admin's session on the user's behalf is not one of the user's devices.
    status, listed = await admin_call(client, "GET", devices, admin_token)
    assert listed["devices"] == []

    status, body = await admin_call(
        client, "GET", f"{V1}/username_available", admin_token, params={"username": "alice"}
    )
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await admin_call(
        client, "GET", f"{V1}/username_available", admin_token, params={"username": "zed"}
    )
    assert (status, body) == (200, {"available": True})


async def test_v3_user_list_filters_deactivated_both_ways(server: tuple[Client, str]) -> None:
    client, admin_token = server
    await make_user(client, "active")
    gone, _ = await make_user(client, "gone")
    await admin_call(client, "POST", f"{V1}/deactivate/{gone}", admin_token, {})

    async def names(version: str, **params: str) -> set[str]:
        status, body = await admin_call(
            client, "GET", f"/_synapse/admin/{version}/users", admin_token, params=params
        )
        assert status == 200, body
        return {u["name"] for u in body["users"]}

    assert gone in await names("v3")
    assert await names("v3", deactivated="true") == {gone}
    assert gone not in await names("v3", deactivated="false")
    assert gone not in await names("v2")
    assert gone in await names("v2", deactivated="true")
