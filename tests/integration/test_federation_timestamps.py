"""Jumping to a date in a room whose early history is on another server: the client's
timestamp_to_event asks the room's other servers when ours does not cover the time,
and the federation /timestamp_to_event that answers them; and the old v1 /invite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from federation.builder import build_event
from federation.room_versions import get_room_version
from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from homeserver.storage.rooms import events as event_store
from tests.integration.conftest import RoomUser
from tests.integration.peers import PEER_CONFIG, free_port

Client = TestClient[Any, Any]


async def peer(homeserver_client: Callable[..., Any]) -> Client:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}",
        port=port,
        **PEER_CONFIG,
        **{"rate_limits.enabled": False},
    )
    return client


def hs_of(client: Client) -> Homeserver:
    return client.app[HOMESERVER]


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def timestamp_of(user: RoomUser, room_id: str, event_id: str) -> int:
    status, event = await user.get(f"/v3/rooms/{room_id}/event/{event_id}")
    assert status == 200, event
    return int(event["origin_server_ts"])


async def test_jump_to_a_date_before_we_joined(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    sent = []
    for n in range(4):
        sent.append(await alice.say(room_id, f"old {n}"))
        await asyncio.sleep(0.02)
    times = [await timestamp_of(alice, room_id, e) for e in sent]
    await asyncio.sleep(0.02)
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")

    # B holds nothing from before bob's join: it asks A, fetches the event, answers it.
    async with hs_of(b).db.pool.connection() as conn:
        assert await event_store.get_events(conn, sent) == {}
    status, body = await bob.get(
        f"/v1/rooms/{room_id}/timestamp_to_event", ts=str(times[1]), dir="f"
    )
    assert status == 200, body
    assert body == {"event_id": sent[1], "origin_server_ts": times[1]}
    status, context = await bob.get(f"/v3/rooms/{room_id}/context/{sent[1]}")
    assert status == 200, context
    assert context["event"]["content"]["body"] == "old 1"
    # Going backwards from just before the third message finds the second, held now.
    status, body = await bob.get(
        f"/v1/rooms/{room_id}/timestamp_to_event", ts=str(times[2] - 1), dir="b"
    )
    assert status == 200 and body["event_id"] == sent[1]
    # Before the room existed there is nothing, on either server.
    status, body = await bob.get(f"/v1/rooms/{room_id}/timestamp_to_event", ts="1", dir="b")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_federation_timestamp_to_event(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    public = await alice.create_room(preset="public_chat")
    await alice.state(public, "m.room.history_visibility", {"history_visibility": "world_readable"})
    first = await alice.say(public, "hello")
    ts = await timestamp_of(alice, public, first)
    private = await alice.create_room(preset="private_chat")
    await alice.say(private, "secret")
    client_b, server_a = hs_of(b).remote_client, hs_of(a).server_name
    path = "/_matrix/federation/v1/timestamp_to_event/"
    answer = await client_b.get_json(server_a, path + public, {"ts": str(ts), "dir": "f"})
    assert answer == {"event_id": first, "origin_server_ts": ts}
    # A room B has no part in, by history visibility, shows it nothing.
    with pytest.raises(RequestFailed) as failed:
        await client_b.get_json(server_a, path + private, {"ts": str(ts), "dir": "b"})
    assert failed.value.status == 404
    with pytest.raises(RequestFailed) as failed:
        await client_b.get_json(server_a, path + public, {"ts": "soon", "dir": "f"})
    assert failed.value.status == 400 and failed.value.errcode == "M_INVALID_PARAM"
    with pytest.raises(RequestFailed) as failed:
        await client_b.get_json(server_a, path + public, {"ts": str(ts)})
    assert failed.value.status == 400 and failed.value.errcode == "M_MISSING_PARAM"


async def test_v1_invite_from_an_older_server(two: tuple[Client, Client]) -> None:
    """An older server invites one of our users into a room of version 1 with the v1
    API: the event is the body, and the co-signed event comes back as `[200, ...]`."""
    a, b = two
    bob = await RoomUser.make(b, "bob")
    hs_a, hs_b = hs_of(a), hs_of(b)
    inviter = f"@old:{hs_a.server_name}"
    room_id = f"!v1room:{hs_a.server_name}"
    version = get_room_version("1")
    invite = build_event(
        version,
        hs_a.signing_key,
        event_type="m.room.member",
        room_id=room_id,
        sender=inviter,
        state_key=bob.user_id,
        content={"membership": "invite"},
        prev_events=[],
        auth_events=[],
        depth=3,
        origin_server_ts=1_700_000_000_000,
        unsigned={
            "invite_room_state": [
                {
                    "type": "m.room.name",
                    "state_key": "",
                    "sender": inviter,
                    "content": {"name": "Old room"},
                }
            ]
        },
    )
    answer = await hs_a.remote_client.put_json(
        hs_b.server_name,
        f"/_matrix/federation/v1/invite/{room_id}/{invite.event_id}",
        invite.pdu,
    )
    assert isinstance(answer, list) and answer[0] == 200
    signatures = answer[1]["event"]["signatures"]
    assert set(signatures) == {hs_a.server_name, hs_b.server_name}
    status, body = await bob.get("/v3/sync")
    assert status == 200
    invite_state = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert {"name": "Old room"} in [e["content"] for e in invite_state]
