"""Presence: the status endpoints, who may see whom, and the idle/offline timeouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.core.clock import now_ms
from homeserver.services.ephemeral.presence import IDLE_AFTER_MS, OFFLINE_AFTER_MS
from homeserver.services.homeserver import Homeserver
from homeserver.storage.core import streams
from tests.integration.conftest import RoomUser, call


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


def status_path(user_id: str) -> str:
    return f"/v3/presence/{user_id}/status"


async def presence_position(hs: Homeserver) -> int:
    async with hs.db.pool.connection() as conn:
        return (await streams.safe_positions(conn))["presence"]


async def events_for(hs: Homeserver, user_id: str, after: int = 0) -> dict[str, dict[str, Any]]:
    """sender -> content of the m.presence events the user would sync."""
    async with hs.db.pool.connection() as conn:
        up_to = (await streams.safe_positions(conn))["presence"]
        events = await hs.presence.presence_events(conn, user_id, after, up_to)
    assert all(e["type"] == "m.presence" for e in events)
    return {e["sender"]: e["content"] for e in events}


async def test_set_and_get_own_presence(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    status, body = await call(client, "GET", status_path(alice.user_id), headers=alice.headers)
    assert (status, body) == (200, {"presence": "offline"})
    status, body = await call(
        client,
        "PUT",
        status_path(alice.user_id),
        {"presence": "online", "status_msg": "here"},
        headers=alice.headers,
    )
    assert (status, body) == (200, {})
    status, body = await call(client, "GET", status_path(alice.user_id), headers=alice.headers)
    assert status == 200
    assert body["presence"] == "online"
    assert body["status_msg"] == "here"
    assert body["currently_active"] is True
    assert 0 <= body["last_active_ago"] < 60_000

    status, _ = await call(
        client,
        "PUT",
        status_path(alice.user_id),
        {"presence": "unavailable"},
        headers=alice.headers,
    )
    assert status == 200
    status, body = await call(client, "GET", status_path(alice.user_id), headers=alice.headers)
    assert body["presence"] == "unavailable"
    assert "status_msg" not in body and "currently_active" not in body


async def test_presence_visibility_and_denials(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await call(client, "PUT", status_path(bob.user_id), {"presence": "online"}, headers=bob.headers)
    await call(
        client, "PUT", status_path(carol.user_id), {"presence": "online"}, headers=carol.headers
    )

    status, body = await call(client, "GET", status_path(bob.user_id), headers=alice.headers)
    assert (status, body["presence"]) == (200, "online")
    status, body = await call(client, "GET", status_path(carol.user_id), headers=alice.headers)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await call(
        client, "GET", status_path("@nobody:test.local"), headers=alice.headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await call(
        client, "PUT", status_path(bob.user_id), {"presence": "offline"}, headers=alice.headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

    path = status_path(alice.user_id)
    status, body = await call(client, "PUT", path, data=b"nope", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "PUT", path, {}, headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    for bad in (
        {"presence": "busy"},
        {"presence": "online", "status_msg": 5},
        {"presence": "online", "status_msg": "x" * 5000},
    ):
        status, body = await call(client, "PUT", path, bad, headers=alice.headers)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), bad

    # Sync sees the presence of users sharing a room, and one's own; never Carol's.
    await hs.presence.user_synced(alice.user_id, None)
    seen = await events_for(hs, alice.user_id)
    assert set(seen) == {alice.user_id, bob.user_id}
    assert seen[bob.user_id]["presence"] == "online"
    mark = await presence_position(hs)
    await call(
        client, "PUT", status_path(bob.user_id), {"presence": "unavailable"}, headers=bob.headers
    )
    await call(
        client, "PUT", status_path(carol.user_id), {"presence": "offline"}, headers=carol.headers
    )
    assert set(await events_for(hs, alice.user_id, mark)) == {bob.user_id}


async def test_idle_and_offline_timeouts(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    start = now_ms()
    clock = [start]
    hs.presence.clock = lambda: clock[0]

    async def state() -> str:
        status, body = await call(client, "GET", status_path(alice.user_id), headers=alice.headers)
        assert status == 200
        return str(body["presence"])

    # Syncing with set_presence=offline leaves no trace.
    await hs.presence.user_synced(alice.user_id, "offline")
    assert await state() == "offline"
    await hs.presence.user_synced(alice.user_id, None)
    assert await state() == "online"

    # Still syncing, but idle for longer than the idle timeout: unavailable.
    for minutes in (2, 4, 6):
        clock[0] = start + minutes * 60_000
        await hs.presence.user_synced(alice.user_id, None)
    assert clock[0] - start > IDLE_AFTER_MS
    assert await hs.presence.sweep() == 1
    assert await state() == "unavailable"
    # Syncing does not end idleness; acting does.
    await hs.presence.user_synced(alice.user_id, None)
    assert await state() == "unavailable"
    mark = await presence_position(hs)
    await hs.presence.user_active(alice.user_id)
    assert await state() == "online"
    assert alice.user_id in await events_for(hs, alice.user_id, mark)

    # No sync for longer than the offline timeout: offline, announced on the stream.
    mark = await presence_position(hs)
    clock[0] += OFFLINE_AFTER_MS + 1000
    assert await hs.presence.sweep() == 1
    assert await state() == "offline"
    assert (await events_for(hs, alice.user_id, mark))[alice.user_id]["presence"] == "offline"
    # An initial sync leaves offline users out: clients assume offline.
    assert alice.user_id not in await events_for(hs, alice.user_id)
    assert await hs.presence.sweep() == 0

    # A sync brings the user back online.
    await hs.presence.user_synced(alice.user_id, None)
    assert await state() == "online"
    await hs.presence.user_synced(alice.user_id, "unavailable")
    assert await state() == "unavailable"


async def test_presence_disabled(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"presence.enabled": False})
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    status, body = await call(
        client, "PUT", status_path(alice.user_id), {"presence": "online"}, headers=alice.headers
    )
    assert (status, body) == (200, {})
    # Validation still applies, and nobody's presence is shared.
    status, body = await call(
        client, "PUT", status_path(alice.user_id), {"presence": "busy"}, headers=alice.headers
    )
    assert status == 400
    status, body = await call(client, "GET", status_path(alice.user_id), headers=bob.headers)
    assert (status, body) == (200, {"presence": "offline"})
    await hs.presence.user_synced(alice.user_id, None)
    assert await events_for(hs, alice.user_id) == {}


async def test_sync_sends_presence_of_users_newly_sharing_a_room(
    client: TestClient[Any, Any],
) -> None:
    """Presence set before two users shared a room reaches the other's next sync once
    they do: when one joins a room of the other's, either way round."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    for user, state in ((alice, "online"), (carol, "unavailable")):
        await call(
            client, "PUT", status_path(user.user_id), {"presence": state}, headers=user.headers
        )
    room_id = await alice.create_room(preset="public_chat")

    def presence_of(body: dict[str, Any]) -> dict[str, str]:
        events = body.get("presence", {}).get("events", [])
        return {e["sender"]: e["content"]["presence"] for e in events}

    status, body = await bob.get("/v3/sync")
    assert status == 200, body
    assert alice.user_id not in presence_of(body)
    # bob joins alice's room: alice's presence comes with it.
    await bob.join(room_id)
    status, body = await bob.get("/v3/sync", since=body["next_batch"], timeout="0")
    assert room_id in body["rooms"]["join"]
    assert presence_of(body).get(alice.user_id) == "online"
    # carol joins a room bob is in: her presence comes with her.
    await carol.join(room_id)
    status, body = await bob.get("/v3/sync", since=body["next_batch"], timeout="0")
    assert presence_of(body).get(carol.user_id) == "unavailable"
    assert alice.user_id not in presence_of(body)  # nothing new about alice
