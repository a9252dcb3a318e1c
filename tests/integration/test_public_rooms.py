"""The published room list: what a room's entry says, the order, filters and both
directions of pagination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def test_entry_fields_and_publishing(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(
        visibility="public",
        preset="public_chat",
        name="Tea Room",
        topic="All about tea",
        room_alias_name="tea",
        creation_content={"type": "m.space"},
    )
    await alice.state(room_id, "m.room.avatar", {"url": "mxc://test.local/cup"})
    await alice.state(
        room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    await bob.join(room_id)
    await alice.create_room(preset="public_chat", name="Unlisted")

    status, body = await call(client, "GET", "/v3/publicRooms")
    assert status == 200
    assert body["chunk"] == [
        {
            "room_id": room_id,
            "name": "Tea Room",
            "topic": "All about tea",
            "canonical_alias": "#tea:test.local",
            "num_joined_members": 2,
            "world_readable": True,
            "guest_can_join": False,
            "join_rule": "public",
            "avatar_url": "mxc://test.local/cup",
            "room_type": "m.space",
        }
    ]
    assert body["total_room_count_estimate"] == 1
    assert "next_batch" not in body and "prev_batch" not in body
    status, body = await call(client, "GET", "/r0/publicRooms", params={"server": "test.local"})
    assert status == 200 and len(body["chunk"]) == 1


async def test_order_filters_and_pagination(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    others = [await RoomUser.make(client, f"user{i}") for i in range(3)]
    rooms = []
    for i in range(5):
        rooms.append(
            await alice.create_room(
                visibility="public", preset="public_chat", name=f"Room {i}", topic=f"topic {i}"
            )
        )
    # Room i has i + 1 members (capped at 4), so the list runs from room 4 down.
    for i, room_id in enumerate(rooms):
        for other in others[: min(i, 3)]:
            await other.join(room_id)
    by_size = sorted(rooms, key=lambda r: (-min(rooms.index(r) + 1, 4), r))

    headers = alice.headers
    status, page1 = await call(client, "POST", "/v3/publicRooms", {"limit": 2}, headers=headers)
    assert status == 200
    assert [r["room_id"] for r in page1["chunk"]] == by_size[:2]
    assert page1["total_room_count_estimate"] == 5 and "prev_batch" not in page1
    status, page2 = await call(
        client,
        "POST",
        "/v3/publicRooms",
        {"limit": 2, "since": page1["next_batch"]},
        headers=headers,
    )
    assert [r["room_id"] for r in page2["chunk"]] == by_size[2:4]
    status, page3 = await call(
        client, "GET", "/v3/publicRooms", params={"limit": "2", "since": page2["next_batch"]}
    )
    assert [r["room_id"] for r in page3["chunk"]] == by_size[4:]
    assert "next_batch" not in page3
    status, back = await call(
        client, "GET", "/v3/publicRooms", params={"limit": "2", "since": page3["prev_batch"]}
    )
    assert [r["room_id"] for r in back["chunk"]] == by_size[2:4]
    status, back = await call(
        client, "GET", "/v3/publicRooms", params={"limit": "2", "since": back["prev_batch"]}
    )
    assert [r["room_id"] for r in back["chunk"]] == by_size[:2]
    assert "prev_batch" not in back and "next_batch" in back

    status, found = await call(
        client,
        "POST",
        "/v3/publicRooms",
        {"filter": {"generic_search_term": "ROOM 3"}},
        headers=headers,
    )
    assert [r["room_id"] for r in found["chunk"]] == [rooms[3]]
    assert found["total_room_count_estimate"] == 1
    status, found = await call(
        client,
        "POST",
        "/v3/publicRooms",
        {"filter": {"generic_search_term": "topic 1"}},
        headers=headers,
    )
    assert [r["room_id"] for r in found["chunk"]] == [rooms[1]]


async def test_room_types_and_networks(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    space = await alice.create_room(visibility="public", creation_content={"type": "m.space"})
    plain = await alice.create_room(visibility="public")
    headers = alice.headers

    async def listed(body: dict[str, Any]) -> set[str]:
        status, result = await call(client, "POST", "/v3/publicRooms", body, headers=headers)
        assert status == 200, result
        return {r["room_id"] for r in result["chunk"]}

    assert await listed({"filter": {"room_types": ["m.space"]}}) == {space}
    assert await listed({"filter": {"room_types": [None]}}) == {plain}
    assert await listed({"filter": {"room_types": [None, "m.space"]}}) == {space, plain}
    assert await listed({"filter": {"room_types": []}}) == set()
    assert await listed({"include_all_networks": True}) == {space, plain}
    assert await listed({"third_party_instance_id": "irc"}) == set()


async def test_bad_requests(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    headers = alice.headers
    status, body = await call(client, "GET", "/v3/publicRooms", params={"limit": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(client, "GET", "/v3/publicRooms", params={"since": "garbage!"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # Another server's list is asked over federation, for logged-in users only.
    status, body = await call(client, "GET", "/v3/publicRooms", params={"server": "other.org"})
    assert status == 401
    status, body = await call(client, "POST", "/v3/publicRooms", data=b"nope", headers=headers)
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    cases: list[dict[str, Any]] = [
        {"limit": "10"},
        {"limit": True},
        {"filter": []},
        {"filter": {"generic_search_term": 3}},
        {"filter": {"room_types": [1]}},
        {"include_all_networks": "yes"},
    ]
    for bad in cases:
        status, body = await call(client, "POST", "/v3/publicRooms", bad, headers=headers)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", bad
    status, body = await call(client, "POST", "/v3/publicRooms", {"limit": 0}, headers=headers)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(
        client,
        "POST",
        "/v3/publicRooms",
        {"include_all_networks": True, "third_party_instance_id": "irc"},
        headers=headers,
    )
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(client, "POST", "/v3/publicRooms", {})
    assert status == 401
