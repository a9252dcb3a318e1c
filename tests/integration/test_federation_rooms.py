"""Rooms across two of our servers on loopback: invites, joins (by id with server_name,
by remote alias), messages both ways, leaving, bans, and hostile PDUs over /send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from federation.builder import build_event
from federation.hashing import compute_event_id
from federation.keys import SigningKey
from federation.room_versions import RoomVersion, get_room_version
from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms, state
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


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def bodies(user: RoomUser, room_id: str) -> list[str]:
    status, page = await user.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    if status != 200:
        return []
    return [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]


async def sees(user: RoomUser, room_id: str, text: str) -> bool:
    return text in await bodies(user, room_id)


async def membership(user: RoomUser, room_id: str, target: str) -> str | None:
    status, body = await user.get(f"/v3/rooms/{room_id}/state/m.room.member/{target}")
    return body.get("membership") if status == 200 else None


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def test_invite_join_and_chat_both_ways(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="private_chat", name="Across")
    await alice.invite(room_id, bob.user_id)

    async def invited() -> bool:
        status, body = await bob.get("/v3/sync")
        return status == 200 and room_id in body.get("rooms", {}).get("invite", {})

    await eventually(invited)
    await bob.join(room_id)
    assert await membership(alice, room_id, bob.user_id) == "join"
    await alice.say(room_id, "hello bob")
    await eventually(lambda: sees(bob, room_id, "hello bob"))
    await bob.say(room_id, "hello alice")
    await eventually(lambda: sees(alice, room_id, "hello alice"))

    status, body = await bob.get("/v3/sync")
    assert status == 200
    assert room_id in body["rooms"]["join"]

    await bob.leave(room_id)
    await eventually(lambda: _is(alice, room_id, bob.user_id, "leave"))


async def _is(user: RoomUser, room_id: str, target: str, expected: str) -> bool:
    return await membership(user, room_id, target) == expected


async def test_join_public_room_by_server_name_and_alias_then_ban(
    two: tuple[Client, Client],
) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    carol = await RoomUser.make(b, "carol")
    room_id = await alice.create_room(preset="public_chat", room_alias_name="lobby")
    server_a = hs_of(a).server_name
    await bob.ok("POST", f"/join/{room_id}?server_name={server_a}")
    alias = f"#lobby:{server_a}"
    await carol.ok("POST", f"/join/{alias.replace('#', '%23')}")
    await eventually(lambda: _is(alice, room_id, carol.user_id, "join"))

    await alice.ok("POST", f"/rooms/{room_id}/ban", {"user_id": bob.user_id})
    await eventually(lambda: _is(carol, room_id, bob.user_id, "ban"))
    resp = await bob.client.post(
        f"/_matrix/client/v3/rooms/{room_id}/join", headers=bob.headers, json={}
    )
    assert resp.status == 403
    await carol.say(room_id, "carol still here")
    await eventually(lambda: sees(alice, room_id, "carol still here"))


async def test_rejecting_a_remote_invite(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="private_chat")
    await alice.invite(room_id, bob.user_id)
    await bob.leave(room_id)
    assert await membership(alice, room_id, bob.user_id) == "leave"


def hostile_event(
    hs_key: SigningKey, room_id: str, sender: str, prev: list[str], auth: list[str], **kw: Any
) -> dict[str, Any]:
    event = build_event(
        kw.pop("room_version"),
        hs_key,
        event_type=kw.pop("event_type", "m.room.message"),
        sender=sender,
        content=kw.pop("content", {"msgtype": "m.text", "body": "hostile"}),
        prev_events=prev,
        auth_events=auth,
        depth=kw.pop("depth", 100),
        origin_server_ts=int(time.time() * 1000),
        room_id=room_id,
        **kw,
    )
    return dict(event.pdu)


async def room_position(
    hs: Homeserver, room_id: str, member: str
) -> tuple[RoomVersion, list[str], list[str]]:
    """The room's version, its forward extremities, and the auth events `member` cites."""
    async with hs.db.pool.connection() as conn:
        room = await rooms.get_room(conn, room_id)
        assert room is not None
        tips = [eid for eid, _ in await rooms.get_forward_extremities(conn, room_id)]
        current = await state.get_current_state(conn, room_id)
    auth = [
        current[k] for k in (("m.room.power_levels", ""), ("m.room.member", member)) if k in current
    ]
    return get_room_version(room.room_version), tips, auth


def hostile_pdus(
    hs_b: Homeserver,
    room_id: str,
    bob: str,
    alice: str,
    position: tuple[RoomVersion, list[str], list[str]],
) -> list[dict[str, Any]]:
    """From bob's server: one good PDU, then a forged signature, a tampered hash, a power
    grab, one claiming to be alice's, one for an unknown room and an oversized one."""
    rv, tips, auth = position
    key_b = hs_b.signing_key

    good = hostile_event(key_b, room_id, bob, tips, auth, room_version=rv)
    bad_sig = hostile_event(
        key_b, room_id, bob, tips, auth, room_version=rv, content={"body": "forged sig"}
    )
    bad_sig["signatures"][hs_b.server_name] = {
        k: "A" * 86 for k in bad_sig["signatures"][hs_b.server_name]
    }
    bad_hash = hostile_event(key_b, room_id, bob, tips, auth, room_version=rv)
    bad_hash["content"] = {"msgtype": "m.text", "body": "tampered"}
    no_power = hostile_event(
        key_b,
        room_id,
        bob,
        tips,
        auth,
        room_version=rv,
        event_type="m.room.power_levels",
        content={"users": {bob: 100}},
        state_key="",
    )
    forged = hostile_event(
        key_b, room_id, alice, tips, auth, room_version=rv, content={"body": "as alice"}
    )
    unknown_room = hostile_event(key_b, "!nowhere:elsewhere", bob, [], [], room_version=rv)
    oversized = hostile_event(
        key_b, room_id, bob, tips, auth, room_version=rv, content={"body": "x" * 70_000}
    )
    return [good, bad_sig, bad_hash, no_power, forged, unknown_room, oversized]


async def test_hostile_pdus_over_send(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    hs_a, hs_b = hs_of(a), hs_of(b)
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_a.server_name}")
    position = await room_position(hs_a, room_id, bob.user_id)
    rv = position[0]
    pdus = hostile_pdus(hs_b, room_id, bob.user_id, alice.user_id, position)
    good, bad_sig, bad_hash, no_power, forged, unknown_room, oversized = pdus

    client = hs_b.remote_client
    path = "/_matrix/federation/v1/send/hostile1"
    txn = {
        "origin": hs_b.server_name,
        "origin_server_ts": 0,
        "pdus": pdus,
    }
    answer = await client.put_json(hs_a.server_name, path, txn)
    results = answer["pdus"]

    def result(pdu: dict[str, Any]) -> dict[str, Any]:
        return results[compute_event_id(pdu, rv)]

    assert result(good) == {}
    assert "error" in result(bad_sig)
    assert result(bad_hash) == {}
    assert "error" in result(no_power)
    assert "error" in result(forged)
    assert "error" in result(unknown_room)
    assert "over the 65536 byte limit" in result(oversized)["error"]

    texts = await bodies(alice, room_id)
    assert "hostile" in texts
    assert not {"tampered", "forged sig", "as alice"} & set(texts)
    async with hs_a.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, [compute_event_id(no_power, rv)])
        assert rows and all(r.rejected_reason for r in rows.values())
        never_stored = [compute_event_id(p, rv) for p in (bad_sig, forged, oversized)]
        assert not await event_store.get_events(conn, never_stored)
    _, pl = await alice.get(f"/v3/rooms/{room_id}/state/m.room.power_levels/")
    assert bob.user_id not in pl.get("users", {})

    too_many = {**txn, "pdus": [good] * 51}
    with pytest.raises(RequestFailed) as refused:
        await client.put_json(hs_a.server_name, "/_matrix/federation/v1/send/hostile2", too_many)
    assert refused.value.status == 400


async def test_unknown_room_versions_are_refused(two: tuple[Client, Client]) -> None:
    """An invite into, or a join of, a room version we do not implement is refused with
    M_INCOMPATIBLE_ROOM_VERSION rather than half handled."""
    from homeserver.services.remote.client import RequestFailed

    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    hs_a, hs_b = hs_of(a), hs_of(b)
    client = hs_b.remote_client
    event_id = "$unknownversioninvite"
    invite = {
        "room_version": "org.example.unknown",
        "event": {
            "type": "m.room.member",
            "state_key": alice.user_id,
            "sender": bob.user_id,
            "room_id": "!elsewhere",
            "content": {"membership": "invite"},
        },
        "invite_room_state": [],
    }
    with pytest.raises(RequestFailed) as refused:
        await client.put_json(
            hs_a.server_name, f"/_matrix/federation/v2/invite/!elsewhere/{event_id}", invite
        )
    assert (refused.value.status, refused.value.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")

    with pytest.raises(RequestFailed) as refused:
        await client.get_json(
            hs_a.server_name,
            f"/_matrix/federation/v1/make_join/{room_id}/{bob.user_id}",
            {"ver": ["org.example.unknown"]},
        )
    assert (refused.value.status, refused.value.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
