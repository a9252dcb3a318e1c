"""Receipts and read markers: who may send them, what they point at, who sees them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver
from homeserver.storage.core import streams
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


async def receipts_seen(
    client: TestClient[Any, Any], viewer: str, room_id: str, after: int = 0
) -> dict[str, Any]:
    hs: Homeserver = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        up_to = (await streams.safe_positions(conn))["receipts"]
        by_room = await hs.receipts.receipts_for_rooms(conn, [room_id], after, up_to, viewer)
    return by_room.get(room_id, {})


async def receipts_position(client: TestClient[Any, Any]) -> int:
    hs: Homeserver = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        return (await streams.safe_positions(conn))["receipts"]


async def test_public_and_private_receipts(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    first = await alice.say(room_id, "one")
    second = await alice.say(room_id, "two")

    status, body = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.read/{first}", {}, headers=bob.headers
    )
    assert (status, body) == (200, {})
    status, _ = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/receipt/m.read.private/{second}",
        {},
        headers=bob.headers,
    )
    assert status == 200

    seen_by_alice = await receipts_seen(client, alice.user_id, room_id)
    assert set(seen_by_alice) == {first}
    assert set(seen_by_alice[first]["m.read"]) == {bob.user_id}
    assert isinstance(seen_by_alice[first]["m.read"][bob.user_id]["ts"], int)

    seen_by_bob = await receipts_seen(client, bob.user_id, room_id)
    assert set(seen_by_bob) == {first, second}
    assert set(seen_by_bob[second]["m.read.private"]) == {bob.user_id}

    # Incrementally, only what is new; and a receipt never moves back.
    mark = await receipts_position(client)
    status, _ = await call(
        client, "POST", f"/r0/rooms/{room_id}/receipt/m.read/{second}", {}, headers=alice.headers
    )
    assert status == 200
    status, _ = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.read/{first}", {}, headers=alice.headers
    )
    assert status == 200
    new = await receipts_seen(client, bob.user_id, room_id, mark)
    assert set(new) == {second}
    assert set(new[second]["m.read"]) == {alice.user_id}


async def test_threaded_receipts(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    root = await alice.say(room_id, "root")
    reply = await alice.send(
        room_id,
        {
            "msgtype": "m.text",
            "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        },
    )
    elsewhere = await alice.say(room_id, "main timeline")
    for event_id, thread_id in ((root, root), (reply, root), (elsewhere, "main")):
        status, body = await call(
            client,
            "POST",
            f"/v3/rooms/{room_id}/receipt/m.read/{event_id}",
            {"thread_id": thread_id},
            headers=bob.headers,
        )
        assert status == 200, body
    seen = await receipts_seen(client, alice.user_id, room_id)
    # The thread's receipt moved on from its root to the reply.
    assert set(seen) == {reply, elsewhere}
    assert seen[reply]["m.read"][bob.user_id]["thread_id"] == root
    assert seen[elsewhere]["m.read"][bob.user_id]["thread_id"] == "main"

    # Unthreaded and threaded receipts are kept apart.
    status, _ = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.read/{root}", None, headers=bob.headers
    )
    assert status == 200
    seen = await receipts_seen(client, alice.user_id, room_id)
    assert "thread_id" not in seen[root]["m.read"][bob.user_id]
    assert seen[reply]["m.read"][bob.user_id]["thread_id"] == root

    for body, why in (
        ({"thread_id": root}, "an event outside the thread"),
        ({"thread_id": ""}, "empty"),
        ({"thread_id": 5}, "not a string"),
        ({"thread_id": "thread"}, "neither main nor an event id"),
    ):
        status, err = await call(
            client,
            "POST",
            f"/v3/rooms/{room_id}/receipt/m.read/{elsewhere}",
            body,
            headers=bob.headers,
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), why
    status, err = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/receipt/m.fully_read/{elsewhere}",
        {"thread_id": "main"},
        headers=bob.headers,
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_receipt_denials(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    carol = await RoomUser.make(client, "carol")
    event_id = await alice.say(room_id, "hello")
    other_room = await carol.create_room(preset="public_chat")
    other_event = await carol.say(other_room, "elsewhere")
    path = f"/v3/rooms/{room_id}/receipt/m.read/{event_id}"

    status, err = await call(client, "POST", path, {}, headers=carol.headers)
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    status, err = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/receipt/m.read/$unknown:test.local",
        {},
        headers=bob.headers,
    )
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.read/{other_event}", {}, headers=bob.headers
    )
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.seen/{event_id}", {}, headers=bob.headers
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.read/not-an-event", {}, headers=bob.headers
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await call(client, "POST", path, data=b"{bad", headers=bob.headers)
    assert (status, err["errcode"]) == (400, "M_NOT_JSON")
    status, err = await call(client, "POST", path, ["list"], headers=bob.headers)
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    status, err = await call(
        client, "POST", f"/v3/rooms/{room_id}/read_markers", {"m.read": 7}, headers=bob.headers
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/read_markers",
        {"m.fully_read": event_id},
        headers=carol.headers,
    )
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    assert await receipts_seen(client, alice.user_id, room_id) == {}


async def fully_read(client: TestClient[Any, Any], user: RoomUser, room_id: str) -> Any:
    status, body = await call(
        client,
        "GET",
        f"/v3/user/{user.user_id}/rooms/{room_id}/account_data/m.fully_read",
        headers=user.headers,
    )
    assert status == 200, body
    return body["event_id"]


async def test_read_markers(client: TestClient[Any, Any]) -> None:
    alice, bob, room_id = await room_with_two(client)
    first = await alice.say(room_id, "one")
    second = await alice.say(room_id, "two")

    status, _ = await call(
        client, "POST", f"/v3/rooms/{room_id}/receipt/m.fully_read/{first}", {}, headers=bob.headers
    )
    assert status == 200
    assert await fully_read(client, bob, room_id) == first
    # m.fully_read is account data, not a receipt.
    assert await receipts_seen(client, bob.user_id, room_id) == {}

    status, body = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/read_markers",
        {"m.fully_read": second, "m.read": second, "m.read.private": first},
        headers=bob.headers,
    )
    assert (status, body) == (200, {})
    assert await fully_read(client, bob, room_id) == second
    seen = await receipts_seen(client, bob.user_id, room_id)
    assert set(seen[second]["m.read"]) == {bob.user_id}
    assert set(seen[first]["m.read.private"]) == {bob.user_id}
    assert "m.read.private" not in str(await receipts_seen(client, alice.user_id, room_id))

    # The read marker does not move back.
    status, _ = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/read_markers",
        {"m.fully_read": first},
        headers=bob.headers,
    )
    assert status == 200
    assert await fully_read(client, bob, room_id) == second
    # Setting it through the account data API stays forbidden.
    status, _ = await call(
        client,
        "PUT",
        f"/v3/user/{bob.user_id}/rooms/{room_id}/account_data/m.fully_read",
        {"event_id": first},
        headers=bob.headers,
    )
    assert status == 405
