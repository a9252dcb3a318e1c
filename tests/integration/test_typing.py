"""PUT /rooms/{roomId}/typing/{userId}: who may type, timeouts, wake-ups, replication."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.ephemeral.typing import MAX_TIMEOUT_MS
from homeserver.services.homeserver import Homeserver
from tests.integration.conftest import RoomUser, call


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def room_with_two(client: TestClient[Any, Any]) -> tuple[RoomUser, RoomUser, str]:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    return alice, bob, room_id


def typing_path(room_id: str, user_id: str) -> str:
    return f"/v3/rooms/{room_id}/typing/{user_id}"


async def test_typing_starts_and_stops(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice, bob, room_id = await room_with_two(client)
    before = hs.typing.position
    status, body = await call(
        client,
        "PUT",
        typing_path(room_id, alice.user_id),
        {"typing": True, "timeout": 30000},
        headers=alice.headers,
    )
    assert (status, body) == (200, {})
    assert hs.typing.typing_in(room_id) == [alice.user_id]
    assert hs.typing.rooms_changed_since(before) == {room_id}
    started = hs.typing.position

    status, _ = await call(
        client, "PUT", typing_path(room_id, bob.user_id), {"typing": True}, headers=bob.headers
    )
    assert status == 200
    assert hs.typing.typing_in(room_id) == sorted([alice.user_id, bob.user_id])

    status, _ = await call(
        client, "PUT", typing_path(room_id, alice.user_id), {"typing": False}, headers=alice.headers
    )
    assert status == 200
    assert hs.typing.typing_in(room_id) == [bob.user_id]
    assert hs.typing.rooms_changed_since(started) == {room_id}


async def test_typing_denials(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    carol = await RoomUser.make(client, "carol")
    status, body = await call(
        client, "PUT", typing_path(room_id, bob.user_id), {"typing": True}, headers=alice.headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await call(
        client, "PUT", typing_path(room_id, carol.user_id), {"typing": True}, headers=carol.headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    path = typing_path(room_id, alice.user_id)
    status, body = await call(client, "PUT", path, data=b"{nope", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    for bad in (
        {},
        {"typing": "yes"},
        {"typing": True, "timeout": "soon"},
        {"typing": True, "timeout": -1},
    ):
        status, body = await call(client, "PUT", path, bad, headers=alice.headers)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    status, body = await call(client, "PUT", path, [1], headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "PUT", path, {"typing": True})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_typing_expires_and_wakes_waiters(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice, bob, room_id = await room_with_two(client)
    status, _ = await call(
        client,
        "PUT",
        typing_path(room_id, alice.user_id),
        {"typing": True, "timeout": 300},
        headers=alice.headers,
    )
    assert status == 200
    started = hs.typing.position
    # Bob's sync would be waiting on the room: the expiry must wake it.
    assert await hs.notifier.wait(bob.user_id, [room_id], 5.0)
    assert hs.typing.typing_in(room_id) == []
    assert hs.typing.position > started
    assert hs.typing.rooms_changed_since(started) == {room_id}


async def test_timeout_is_capped(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice, _, room_id = await room_with_two(client)
    status, _ = await call(
        client,
        "PUT",
        typing_path(room_id, alice.user_id),
        {"typing": True, "timeout": 10**12},
        headers=alice.headers,
    )
    assert status == 200
    expiry = hs.typing._state.next_expiry()
    assert expiry is not None and expiry <= hs.typing.position + MAX_TIMEOUT_MS + 1000


async def test_changes_from_other_processes_apply_here(client: TestClient[Any, Any]) -> None:
    """What another worker process broadcasts (over NOTIFY) updates this one's state."""
    hs: Homeserver = client.app[HOMESERVER]
    _, bob, room_id = await room_with_two(client)
    before = hs.typing.position
    waiter = asyncio.create_task(hs.notifier.wait(bob.user_id, [room_id], 5.0))
    await asyncio.sleep(0)
    expires_at = before + 60_000
    await hs.notifier._receive(
        {"kind": "typing", "room_id": room_id, "user_id": "@zed:other", "expires_at": expires_at}
    )
    assert await waiter
    assert hs.typing.typing_in(room_id) == ["@zed:other"]
    assert hs.typing.rooms_changed_since(before) == {room_id}
    await hs.notifier._receive(
        {"kind": "typing", "room_id": room_id, "user_id": "@zed:other", "expires_at": None}
    )
    assert hs.typing.typing_in(room_id) == []
    # Malformed payloads are ignored.
    await hs.notifier._receive({"kind": "typing", "room_id": 5, "user_id": None})


async def test_typing_reaches_sync(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    status, body = await call(
        client, "GET", "/v3/sync", params={"timeout": "0"}, headers=bob.headers
    )
    assert status == 200, body
    since = body["next_batch"]

    async def typing_seen(since: str) -> tuple[list[str] | None, str]:
        status, body = await call(
            client,
            "GET",
            "/v3/sync",
            params={"timeout": "5000", "since": since},
            headers=bob.headers,
        )
        assert status == 200, body
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        events = [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == "m.typing"]
        return (events[0]["content"]["user_ids"] if events else None), body["next_batch"]

    waiting = asyncio.create_task(typing_seen(since))
    await asyncio.sleep(0.2)
    status, _ = await call(
        client,
        "PUT",
        typing_path(room_id, alice.user_id),
        {"typing": True, "timeout": 400},
        headers=alice.headers,
    )
    assert status == 200
    users, since = await waiting
    assert users == [alice.user_id]
    # The timeout ends it, and the long-poll hears of that too (after other news,
    # such as Alice's presence).
    for _ in range(5):
        users, since = await typing_seen(since)
        if users is not None:
            break
    assert users == []
