"""The joining side of partial-state joins (MSC3706), between two of our servers: the
joiner asks with `omit_members`, can send and read at once, `/members` waits for the
full state, which is fetched in the background (and again after a restart)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from federation.builder import build_event
from federation.room_versions import get_room_version
from homeserver.services.wiring import build_homeserver
from homeserver.storage.rooms import events, memberships, rooms, state
from tests.integration.conftest import RoomUser
from tests.integration.e2ee_devices import Device
from tests.integration.test_federation_rooms import eventually, hs_of, peer, sees

Client = TestClient[Any, Any]
MEMBERS = 12


@pytest.fixture
async def busy_room(homeserver_client: Callable[..., Any]) -> tuple[Client, Client, list[str]]:
    """Servers A and B; a named public room on A with MEMBERS members besides alice.
    Named, so the resident sends no heroes: B learns only alice (the creator, through
    the auth chain) and its own user before the full state."""
    a, b = await peer(homeserver_client), await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    room_id = await alice.create_room(preset="public_chat", room_version="11", name="Busy")
    members = [alice.user_id]
    for n in range(MEMBERS):
        user = await RoomUser.make(a, f"member{n}")
        await user.join(room_id)
        members.append(user.user_id)
    return a, b, [room_id, *members]


async def joined_on(client: Client, room_id: str) -> set[str]:
    async with hs_of(client).db.pool.connection() as conn:
        return {m.user_id for m in await memberships.members_of_room(conn, room_id)}


LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}}})


async def sync(user: RoomUser, since: str | None = None, **params: str) -> Any:
    query = {"timeout": "0", **({"since": since} if since else {}), **params}
    status, body = await user.get("/v3/sync", **query)
    assert status == 200, body
    return body


def members_in(body: Any, room_id: str) -> set[str]:
    room = body["rooms"]["join"][room_id]
    events = room["state"]["events"] + room["timeline"]["events"]
    return {
        e["state_key"]
        for e in events
        if e["type"] == "m.room.member" and e["content"]["membership"] == "join"
    }


async def test_join_with_partial_state_then_full(
    busy_room: tuple[Client, Client, list[str]],
) -> None:
    a, b, (room_id, *members) = busy_room
    hs_b = hs_of(b)
    bob = await RoomUser.make(b, "bob")
    before = (await sync(bob))["next_batch"]
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    # Hold the room's lock on B so the background fetch cannot take its answer in yet.
    async with hs_b.room_locks.room_lock(room_id):
        assert await hs_b.partial_state.is_partial(room_id)
        known = await joined_on(b, room_id)
        assert bob.user_id in known and len(known) < len(members)
        # Sending and reading work at once; the event reaches the resident.
        await bob.say(room_id, "hello while partial")
        # Syncs show the room at once, lazy-loading members or not.
        for query in ({"filter": LAZY}, {}):
            body = await sync(bob, before, **query)
            timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
            assert "hello while partial" in [e["content"].get("body") for e in timeline]
        partial_sync = body
        alice_a = await RoomUser.make(a, "reader")
        await alice_a.join(room_id)
        await eventually(lambda: sees(alice_a, room_id, "hello while partial"))
        # /members and /joined_members wait for the full state.
        waiting = asyncio.create_task(bob.get(f"/v3/rooms/{room_id}/members"))
        waiting_joined = asyncio.create_task(bob.get(f"/v3/rooms/{room_id}/joined_members"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and not waiting_joined.done()
    status, body = await waiting
    status_joined, joined_body = await waiting_joined
    assert status_joined == 200
    assert set(joined_body["joined"]) - {alice_a.user_id} == {*members, bob.user_id}
    assert status == 200
    listed = {e["state_key"] for e in body["chunk"] if e["content"]["membership"] == "join"}
    # The reader's join reached B while its lock was held: it may come in just after.
    assert listed - {alice_a.user_id} == {*members, bob.user_id}
    assert not await hs_b.partial_state.is_partial(room_id)

    async def everyone() -> bool:
        return await joined_on(b, room_id) == {*members, bob.user_id, alice_a.user_id}

    await eventually(everyone)
    # The next sync not lazy-loading members carries the room's whole state, and
    # nothing of its timeline twice.
    full_sync = await sync(bob, partial_sync["next_batch"])
    assert members_in(full_sync, room_id) >= {*members, bob.user_id}
    timeline = full_sync["rooms"]["join"][room_id]["timeline"]["events"]
    assert "hello while partial" not in [e["content"].get("body") for e in timeline]
    # Messages from members B did not know when it joined are taken in as usual.
    writer = await RoomUser.make(a, "late")
    await writer.join(room_id)
    await writer.say(room_id, "after the full state")
    await eventually(lambda: sees(bob, room_id, "after the full state"))


async def test_fetch_resumes_after_restart(busy_room: tuple[Client, Client, list[str]]) -> None:
    a, b, (room_id, *members) = busy_room
    hs_b = hs_of(b)
    bob = await RoomUser.make(b, "bob")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    async with hs_b.room_locks.room_lock(room_id):
        assert await hs_b.partial_state.is_partial(room_id)
        await hs_b.partial_state.close()  # the process stops before the answer is in
    assert await hs_b.partial_state.is_partial(room_id)
    restarted = build_homeserver(config=hs_b.config, db=hs_b.db, signing_key=hs_b.signing_key)
    await restarted.start()
    try:

        async def full() -> bool:
            return not await restarted.partial_state.is_partial(room_id)

        await eventually(full, within=30)
        assert await joined_on(b, room_id) == {*members, bob.user_id}
    finally:
        await restarted.close()


async def test_members_learnt_with_the_full_state_reach_device_lists(
    homeserver_client: Callable[..., Any],
) -> None:
    """In an encrypted room, the members B learns only from the full state show in its
    user's next sync's `device_lists.changed`, and their keys can be queried."""
    a, b = await peer(homeserver_client), await peer(homeserver_client)
    hs_b = hs_of(b)
    alice = await RoomUser.make(a, "alice")
    room_id = await alice.create_room(preset="public_chat", room_version="11", name="Secret")
    await alice.state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    carol = await Device.make(a, "carol")
    await carol.publish()
    await carol.ok("POST", f"/join/{room_id}")
    bob = await RoomUser.make(b, "bob")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    async with hs_b.room_locks.room_lock(room_id):
        assert await hs_b.partial_state.is_partial(room_id)
        assert carol.user_id not in await joined_on(b, room_id)
        since = (await sync(bob))["next_batch"]

    async def full() -> bool:
        return not await hs_b.partial_state.is_partial(room_id)

    await eventually(full, within=30)
    body = await sync(bob, since)
    assert carol.user_id in body.get("device_lists", {}).get("changed", [])
    answer = await bob.ok("POST", "/keys/query", {"device_keys": {carol.user_id: []}})
    assert (
        answer["device_keys"][carol.user_id]["TESTDEVICE"]["keys"] == (carol.device_keys()["keys"])
    )


def state_requests(caplog: pytest.LogCaptureFixture, room_id: str) -> int:
    """The /state requests for the room that our servers answered (the access log)."""
    path = f"/_matrix/federation/v1/state/{room_id}"
    return sum(1 for r in caplog.records if r.name == "homeserver.access" and path in r.message)


async def test_one_process_of_a_cluster_fetches_the_state(
    busy_room: tuple[Client, Client, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes of server B on one database: the room's full state is fetched from
    the resident once, by the process holding the room; when that process stops
    before taking the answer in, the other one takes the room over."""
    caplog.set_level(logging.INFO, logger="homeserver.access")
    a, b, (room_id, *members) = busy_room
    hs_b = hs_of(b)
    other = build_homeserver(config=hs_b.config, db=hs_b.db, signing_key=hs_b.signing_key)
    await other.start()
    try:
        bob = await RoomUser.make(b, "bob")
        # B's first process joins, fetches the state and waits for its room lock.
        await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
        async with hs_b.room_locks.room_lock(room_id):
            assert await hs_b.partial_state.is_partial(room_id)
            await eventually(lambda: _true(state_requests(caplog, room_id) == 1))
            # The other process looks for rooms nobody fetches: this one is owned.
            await other.partial_state.sweep()
            await asyncio.sleep(1.0)
            assert state_requests(caplog, room_id) == 1
            assert await other.partial_state.is_partial(room_id)

        async def full() -> bool:
            return not await other.partial_state.is_partial(room_id)

        await eventually(full, within=30)
        assert await joined_on(b, room_id) == {*members, bob.user_id}
        assert state_requests(caplog, room_id) == 1

        # A second partial join, whose owner stops before taking the answer in.
        room2 = await RoomUser.make(a, "owner2")
        room2_id = await room2.create_room(preset="public_chat", room_version="11", name="Two")
        carol = await RoomUser.make(b, "carol")
        await carol.ok("POST", f"/join/{room2_id}?server_name={hs_of(a).server_name}")
        async with hs_b.room_locks.room_lock(room2_id):
            assert await hs_b.partial_state.is_partial(room2_id)
            await eventually(lambda: _true(state_requests(caplog, room2_id) == 1))
            await hs_b.partial_state.close()  # the owner dies: its lock goes
        assert await other.partial_state.is_partial(room2_id)
        await other.partial_state.sweep()

        async def taken_over() -> bool:
            return not await other.partial_state.is_partial(room2_id)

        await eventually(taken_over, within=30)
        assert state_requests(caplog, room2_id) == 2
    finally:
        await other.close()


async def _true(value: bool) -> bool:
    return value


async def test_event_taken_in_while_partial_is_rejected_by_the_full_state(
    homeserver_client: Callable[..., Any],
) -> None:
    """A member banned before our join sends (through their server, citing their old
    join): with partial state we hold no membership of theirs, so their own auth events
    stand in and the event is shown; the full state has the ban, so the event is
    rejected and leaves the timeline."""
    a, b = await peer(homeserver_client), await peer(homeserver_client)
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice = await RoomUser.make(a, "alice")
    room_id = await alice.create_room(preset="public_chat", room_version="11", name="Strict")
    eve = await RoomUser.make(a, "eve")
    await eve.join(room_id)
    # Eve sets the topic, so her join is in the auth chain the partial answer carries.
    levels = {"users": {alice.user_id: 100, eve.user_id: 50}, "state_default": 50}
    await alice.state(room_id, "m.room.power_levels", levels)
    await eve.state(room_id, "m.room.topic", {"topic": "eve was here"})
    async with hs_a.db.pool.connection() as conn:
        ids = await state.get_current_state(conn, room_id)
    eve_join = ids[("m.room.member", eve.user_id)]
    create, power = ids[("m.room.create", "")], ids[("m.room.power_levels", "")]
    await alice.ok("POST", f"/rooms/{room_id}/ban", {"user_id": eve.user_id})

    bob = await RoomUser.make(b, "bob")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_a.server_name}")
    async with hs_b.room_locks.room_lock(room_id):
        assert await hs_b.partial_state.is_partial(room_id)
        async with hs_b.db.pool.connection() as conn:
            [(tip, depth), *_] = await rooms.get_forward_extremities(conn, room_id)
        version = get_room_version("11")
        forged = build_event(
            version,
            hs_a.signing_key,
            event_type="m.room.message",
            sender=eve.user_id,
            content={"msgtype": "m.text", "body": "banned but sneaky"},
            prev_events=[tip],
            auth_events=[create, power, eve_join],
            depth=depth + 1,
            origin_server_ts=int(time.time() * 1000),
            room_id=room_id,
        )
        # As an incoming transaction would hand it on (the caller holds the lock).
        assert await hs_b.inbound.process_event(hs_a.server_name, version, forged) is None
        assert await sees(bob, room_id, "banned but sneaky")
        # A lazy-loading sync gives the sender's membership, from the event's auth events.
        room = (await sync(bob, filter=LAZY))["rooms"]["join"][room_id]
        assert eve.user_id in {e["state_key"] for e in room["state"]["events"]}

    async def full() -> bool:
        return not await hs_b.partial_state.is_partial(room_id)

    await eventually(full, within=30)
    assert not await sees(bob, room_id, "banned but sneaky")
    async with hs_b.db.pool.connection() as conn:
        row = (await events.get_events(conn, [forged.event_id]))[forged.event_id]
    assert row.rejected_reason is not None and eve.user_id in row.rejected_reason


async def _unexpected(event: Any) -> str | None:
    raise AssertionError(f"{event.event_id} left the batch for the one-event path")


@pytest.mark.parametrize("path", ["batch", "one event"])
async def test_member_missing_from_the_partial_state_is_heard(
    busy_room: tuple[Client, Client, list[str]], path: str
) -> None:
    """The creator, whose join B holds only as part of the auth chain (the partial
    state names no member but the joiner), speaks before the full state is in: their
    own auth events vouch for their membership, on either intake path (a transaction's
    PDUs go through the batch; the one-event path when they need the network), and the
    full state keeps the message."""
    a, b, (room_id, *members) = busy_room
    hs_a, hs_b = hs_of(a), hs_of(b)
    speaker = members[0]
    bob = await RoomUser.make(b, "bob")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_a.server_name}")
    async with hs_a.db.pool.connection() as conn:
        ids = await state.get_current_state(conn, room_id)
    auth = [ids[("m.room.create", "")], ids[("m.room.power_levels", "")]]
    auth.append(ids[("m.room.member", speaker)])
    version = get_room_version("11")
    async with hs_b.room_locks.room_lock(room_id):
        assert await hs_b.partial_state.is_partial(room_id)
        assert speaker not in await joined_on(b, room_id)
        async with hs_b.db.pool.connection() as conn:
            [(tip, depth), *_] = await rooms.get_forward_extremities(conn, room_id)
        said = build_event(
            version,
            hs_a.signing_key,
            event_type="m.room.message",
            sender=speaker,
            content={"msgtype": "m.text", "body": "from a member B never heard of"},
            prev_events=[tip],
            auth_events=auth,
            depth=depth + 1,
            origin_server_ts=int(time.time() * 1000),
            room_id=room_id,
        )
        if path == "batch":
            results = await hs_b.inbound.batches.take([said], _unexpected)
            assert results == {said.event_id: None}
        else:
            assert await hs_b.inbound.process_event(hs_a.server_name, version, said) is None
        async with hs_b.db.pool.connection() as conn:
            row = (await events.get_events(conn, [said.event_id]))[said.event_id]
        assert row.rejected_reason is None and row.stream_ordering is not None

    async def full() -> bool:
        return not await hs_b.partial_state.is_partial(room_id)

    await eventually(full, within=30)
    assert await sees(bob, room_id, "from a member B never heard of")
