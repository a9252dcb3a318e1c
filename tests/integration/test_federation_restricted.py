"""Restricted rooms and upgrades across two of our servers: a member of the allowed
space joins from the other server (the resident server vouches for the join), and an
upgraded room is followed from the other server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import eventually, hs_of, peer, sees

Client = TestClient[Any, Any]


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def test_restricted_join_from_another_server(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    server_a = hs_of(a).server_name
    space = await alice.create_room(preset="public_chat", creation_content={"type": "m.space"})
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
    room = await alice.create_room(
        preset="private_chat",
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": rules}],
    )
    join = f"/_matrix/client/v3/join/{room}?server_name={server_a}"
    resp = await b.post(join, json={}, headers=bob.headers)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_UNABLE_TO_AUTHORISE_JOIN"

    await bob.ok("POST", f"/join/{space}?server_name={server_a}")
    await bob.ok("POST", f"/join/{room}?server_name={server_a}")
    status, event = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert status == 200 and event["membership"] == "join"
    assert event["join_authorised_via_users_server"] == alice.user_id
    await alice.say(room, "in you come")
    await eventually(lambda: sees(bob, room, "in you come"))

    # Leaving the space does not undo the join, but a new join after leaving both is
    # refused again.
    await bob.leave(room)
    await bob.leave(space)
    await eventually(lambda: _left(alice, space, bob.user_id))
    resp = await b.post(join, json={}, headers=bob.headers)
    assert resp.status in (400, 403), await resp.text()
    assert await _left(alice, room, bob.user_id)
    # Back in the space, back in the room: B, no longer in it, asks A again.
    await bob.ok("POST", f"/join/{space}?server_name={server_a}")
    await bob.ok("POST", f"/join/{room}?server_name={server_a}")
    status, event = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert status == 200 and event["membership"] == "join"


async def _left(user: RoomUser, room_id: str, target: str) -> bool:
    status, event = await user.get(f"/v3/rooms/{room_id}/state/m.room.member/{target}")
    return status == 200 and event["membership"] == "leave"


async def test_upgrade_followed_from_another_server(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    server_a = hs_of(a).server_name
    old = await alice.create_room(preset="public_chat", name="Club", room_version="10")
    await bob.ok("POST", f"/join/{old}?server_name={server_a}")
    new = (await alice.ok("POST", f"/rooms/{old}/upgrade", {"new_version": "11"}))[
        "replacement_room"
    ]

    async def tombstoned() -> bool:
        status, body = await bob.get(f"/v3/rooms/{old}/state/m.room.tombstone/")
        return status == 200 and body.get("replacement_room") == new

    await eventually(tombstoned)
    await bob.ok("POST", f"/join/{new}?server_name={server_a}")
    status, create = await bob.get(f"/v3/rooms/{new}/state/m.room.create/")
    assert status == 200 and create["predecessor"]["room_id"] == old
    status, name = await bob.get(f"/v3/rooms/{new}/state/m.room.name/")
    assert status == 200 and name["name"] == "Club"
    await bob.say(new, "followed")
    await eventually(lambda: sees(alice, new, "followed"))
