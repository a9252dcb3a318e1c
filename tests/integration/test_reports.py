"""Reporting events and rooms: stored for admins, and no way to probe for events the
reporter cannot see."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser, call

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def stored(client: Client, table: str) -> list[tuple[Any, ...]]:
    hs = client.app[HOMESERVER]
    columns = (
        "room_id, event_id, user_id, reason, score"
        if table == "event_reports"
        else ("room_id, user_id, reason")
    )
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(f"SELECT {columns} FROM {table} ORDER BY id")
        return list(await cur.fetchall())


async def test_report_event(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    eve = await RoomUser.make(client, "eve")
    room_id = await alice.create_room(preset="public_chat")
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    early = await alice.say(room_id, "before bob")
    await bob.join(room_id)
    event_id = await alice.say(room_id, "rude words")

    status, body = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/report/{event_id}",
        {"reason": "rude", "score": -100},
        headers=bob.headers,
    )
    assert (status, body) == (200, {})
    status, body = await call(
        client, "POST", f"/r0/rooms/{room_id}/report/{event_id}", {}, headers=bob.headers
    )
    assert status == 200
    assert await stored(client, "event_reports") == [
        (room_id, event_id, bob.user_id, "rude", -100),
        (room_id, event_id, bob.user_id, None, None),
    ]

    not_found = [
        (bob, room_id, early),  # sent before Bob joined, with `joined` history
        (eve, room_id, event_id),  # Eve is not in the room
        (bob, room_id, "$missing"),
        (bob, "!other:test.local", event_id),
    ]
    for user, room, event in not_found:
        status, body = await call(
            client,
            "POST",
            f"/v3/rooms/{room}/report/{event}",
            {"reason": "x"},
            headers=user.headers,
        )
        assert status == 404 and body["errcode"] == "M_NOT_FOUND", (user.user_id, event)

    path = f"/v3/rooms/{room_id}/report/{event_id}"
    for bad, errcode in (
        ({"score": -101}, "M_INVALID_PARAM"),
        ({"score": "bad"}, "M_INVALID_PARAM"),
        ({"reason": 5}, "M_BAD_JSON"),
    ):
        status, body = await call(client, "POST", path, bad, headers=bob.headers)
        assert status == 400 and body["errcode"] == errcode, bad
    status, body = await call(client, "POST", path, data=b"not json", headers=bob.headers)
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    status, body = await call(client, "POST", path, {"reason": "x"})
    assert status == 401


async def test_report_room(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    eve = await RoomUser.make(client, "eve")
    room_id = await alice.create_room(preset="private_chat")
    # Reporting a room does not need membership.
    status, body = await call(
        client, "POST", f"/v3/rooms/{room_id}/report", {"reason": "spam"}, headers=eve.headers
    )
    assert (status, body) == (200, {})
    status, body = await call(
        client, "POST", f"/v3/rooms/{room_id}/report", {"reason": ""}, headers=eve.headers
    )
    assert status == 200
    assert await stored(client, "room_reports") == [
        (room_id, eve.user_id, "spam"),
        (room_id, eve.user_id, ""),
    ]
    status, body = await call(
        client, "POST", "/v3/rooms/!nope:test.local/report", {"reason": "x"}, headers=eve.headers
    )
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await call(
        client, "POST", f"/v3/rooms/{room_id}/report", {}, headers=eve.headers
    )
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await call(
        client, "POST", f"/v3/rooms/{room_id}/report", data=b"[1]", headers=eve.headers
    )
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
