"""The resident side of joins with partial state (MSC3706, spec 1.6): a joining server
that asks with `omit_members` gets the state without member events (but the heroes of
an unnamed room), an auth chain without the events already in the state, and the
servers in the room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from federation.hashing import compute_event_id
from federation.room_versions import get_room_version
from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import hs_of, peer

Client = TestClient[Any, Any]


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def send_join(
    joiner: Client, resident: Client, room_id: str, user_id: str, omit: bool
) -> Any:
    hs_b, server_a = hs_of(joiner), hs_of(resident).server_name
    client = hs_b.remote_client
    template = await client.get_json(
        server_a, f"/_matrix/federation/v1/make_join/{room_id}/{user_id}", {"ver": ["10", "11"]}
    )
    _, join = hs_b.joins._from_template(template, room_id, user_id, "join", {})
    return await client.put_json(
        server_a,
        f"/_matrix/federation/v2/send_join/{room_id}/{join.event_id}",
        join.pdu,
        query={"omit_members": "true"} if omit else None,
    )


async def test_send_join_with_omitted_members(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    others = [await RoomUser.make(a, f"user{n}") for n in range(6)]
    unnamed = await alice.create_room(preset="public_chat", room_version="11")
    named = await alice.create_room(preset="public_chat", room_version="11", name="Big room")
    for user in others:
        await user.join(unnamed)
        await user.join(named)
    server_b = hs_of(b).server_name

    full = await send_join(b, a, named, f"@bob:{server_b}", omit=False)
    assert full["members_omitted"] is False
    members = {e["state_key"] for e in full["state"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, *(u.user_id for u in others)}

    partial = await send_join(b, a, named, f"@carl:{server_b}", omit=True)
    assert partial["members_omitted"] is True
    assert [e for e in partial["state"] if e["type"] == "m.room.member"] == []
    types = {e["type"] for e in partial["state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} <= types
    v11 = get_room_version("11")
    state_ids = {compute_event_id(e, v11) for e in partial["state"]}
    assert set(partial["servers_in_room"]) == {hs_of(a).server_name, server_b}
    # Nothing twice, and the auth chain still holds what authorises the state (the
    # creator's join, which the power levels and join rules cite).
    chain = partial["auth_chain"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in chain)
    assert len(chain) < len(full["auth_chain"]) + len(full["state"])
    assert not state_ids & {compute_event_id(e, v11) for e in chain}

    # An unnamed room keeps its heroes' member events: the first five other members.
    partial = await send_join(b, a, unnamed, f"@dora:{server_b}", omit=True)
    heroes = [e["state_key"] for e in partial["state"] if e["type"] == "m.room.member"]
    assert sorted(heroes) == sorted([alice.user_id, *(u.user_id for u in others[:4])])
