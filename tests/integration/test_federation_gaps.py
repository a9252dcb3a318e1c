"""Across two of our servers on loopback, the inbound paths that only show when delivery
is not neat: a gap filled with /get_missing_events, a fork of concurrent state changes
resolved the same way on both sides, and a soft-failed event (allowed by the state
before it, not by our current state) kept out of clients' sight."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from federation.room_versions import get_room_version
from homeserver.services.federation_reads import pdu_of
from homeserver.services.homeserver import Homeserver
from homeserver.storage import events as event_store
from homeserver.storage import rooms, state
from tests.integration.conftest import RoomUser
from tests.integration.test_federation_history import history, texts
from tests.integration.test_federation_rooms import (
    Client,
    eventually,
    hostile_event,
    hs_of,
    membership,
    peer,
)

_txn_ids = itertools.count()


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


def hold_outbound(monkeypatch: pytest.MonkeyPatch, hs: Homeserver) -> list[str]:
    """Stop `hs` queueing its new events for other servers; the ids it would have sent."""
    held: list[str] = []

    async def send_pdu(destinations: Any, event_id: str) -> None:
        held.append(event_id)

    monkeypatch.setattr(hs.federation_sender, "send_pdu", send_pdu)
    return held


async def deliver(src: Homeserver, dst: Homeserver, event_ids: list[str]) -> dict[str, Any]:
    """PUT `src`'s events to `dst` in one transaction, in this order; the per-PDU answer."""
    pdus = [(await src.federation_reads.pdus([e]))[0] for e in event_ids]
    txn = {"origin": src.server_name, "origin_server_ts": 0, "pdus": pdus}
    path = f"/_matrix/federation/v1/send/gaps{next(_txn_ids)}"
    answer = await src.federation_client.put_json(dst.server_name, path, txn)
    results: dict[str, Any] = answer["pdus"]
    return results


async def tips(hs: Homeserver, room_id: str) -> set[str]:
    async with hs.db.pool.connection() as conn:
        return {eid for eid, _ in await rooms.get_forward_extremities(conn, room_id)}


async def topic(user: RoomUser, room_id: str) -> str | None:
    status, body = await user.get(f"/v3/rooms/{room_id}/state/m.room.topic/")
    return body.get("topic") if status == 200 else None


async def joined_across(a: Client, b: Client) -> tuple[RoomUser, RoomUser, str]:
    """Alice on A creates a public room, Bob on B joins it and is given power 100."""
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    _, power = await alice.get(f"/v3/rooms/{room_id}/state/m.room.power_levels/")
    power["users"][bob.user_id] = 100
    await alice.state(room_id, "m.room.power_levels", power)

    async def powerful() -> bool:
        _, seen = await bob.get(f"/v3/rooms/{room_id}/state/m.room.power_levels/")
        return seen.get("users", {}).get(bob.user_id) == 100

    await eventually(powerful)
    return alice, bob, room_id


async def test_a_gap_is_filled_with_get_missing_events(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice, bob, room_id = await joined_across(a, b)
    await alice.say(room_id, "before the gap")
    await eventually(lambda: _has(bob, room_id, "before the gap"))

    held = hold_outbound(monkeypatch, hs_a)
    sent = [f"held {i}" for i in range(5)]
    ids = [await alice.say(room_id, text) for text in sent]
    assert held == ids
    monkeypatch.undo()

    # Only the last one arrives: B asks A for the four before it.
    asked: list[dict[str, Any]] = []
    missing_events = hs_a.federation_reads.missing_events

    async def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs or {"args": args})
        return await missing_events(*args, **kwargs)

    monkeypatch.setattr(hs_a.federation_reads, "missing_events", spy)
    assert await deliver(hs_a, hs_b, [ids[-1]]) == {ids[-1]: {}}
    assert len(asked) == 1
    # In B's timeline already, not backfilled later by /messages.
    async with hs_b.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, ids)
    assert len(rows) == 5
    assert all(r.stream_ordering is not None and not r.rejected_reason for r in rows.values())
    order = [p for e in ids if (p := rows[e].stream_ordering) is not None]
    assert order == sorted(order) and len(order) == 5
    assert await tips(hs_b, room_id) == {ids[-1]}
    events = await history(bob, room_id)
    assert texts(events)[-6:] == ["before the gap", *sent]
    assert [e["event_id"] for e in events][-5:] == ids


async def _has(user: RoomUser, room_id: str, text: str) -> bool:
    return text in texts(await history(user, room_id))


async def test_concurrent_state_changes_resolve_alike(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice, bob, room_id = await joined_across(a, b)

    held_a = hold_outbound(monkeypatch, hs_a)
    held_b = hold_outbound(monkeypatch, hs_b)
    from_a = await alice.state(room_id, "m.room.topic", {"topic": "alice's topic"})
    from_b = await bob.state(room_id, "m.room.topic", {"topic": "bob's topic"})
    assert (held_a, held_b) == ([from_a], [from_b])
    monkeypatch.undo()

    assert await deliver(hs_a, hs_b, [from_a]) == {from_a: {}}
    assert await deliver(hs_b, hs_a, [from_b]) == {from_b: {}}
    assert await tips(hs_a, room_id) == await tips(hs_b, room_id) == {from_a, from_b}
    on_a, on_b = await topic(alice, room_id), await topic(bob, room_id)
    assert on_a == on_b
    # Same power, same mainline: the later (origin_server_ts, event_id) wins (state
    # resolution v2), on both servers.
    async with hs_a.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, [from_a, from_b])
    pdus = {e: pdu_of(r) for e, r in rows.items()}
    later = max(pdus, key=lambda e: (pdus[e]["origin_server_ts"], e))
    assert on_a == pdus[later]["content"]["topic"]

    # The next message follows both sides of the fork, and both servers agree.
    merged = await alice.say(room_id, "after the fork")
    await eventually(lambda: _has(bob, room_id, "after the fork"))
    async with hs_b.db.pool.connection() as conn:
        row = (await event_store.get_events(conn, [merged]))[merged]
    assert set(pdu_of(row)["prev_events"]) == {from_a, from_b}
    assert await tips(hs_a, room_id) == await tips(hs_b, room_id) == {merged}
    assert await topic(alice, room_id) == await topic(bob, room_id) == on_a
    async with hs_a.db.pool.connection() as conn:
        state_a = await state.get_current_state(conn, room_id)
    async with hs_b.db.pool.connection() as conn:
        state_b = await state.get_current_state(conn, room_id)
    assert state_a == state_b


async def test_an_event_allowed_before_a_ban_is_soft_failed(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    hs_a, hs_b = hs_of(a), hs_of(b)
    _, bob, room_id = await joined_across(a, b)
    mallory = await RoomUser.make(a, "mallory")
    await mallory.join(room_id)
    await eventually(lambda: _member(bob, room_id, mallory.user_id, "join"))
    before_ban = sorted(await tips(hs_b, room_id))
    async with hs_b.db.pool.connection() as conn:
        room = await rooms.get_room(conn, room_id)
        assert room is not None
        current = await state.get_current_state(conn, room_id)
        depth = max(d for _, d in await rooms.get_forward_extremities(conn, room_id))
    rv = get_room_version(room.room_version)
    keys = [("m.room.power_levels", ""), ("m.room.member", mallory.user_id)]
    if not rv.room_id_from_create_event:
        keys.append(("m.room.create", ""))
    auth = [current[k] for k in keys]

    # Bob bans Mallory; A does not hear of it yet.
    held_b = hold_outbound(monkeypatch, hs_b)
    await bob.ok("POST", f"/rooms/{room_id}/ban", {"user_id": mallory.user_id})
    assert len(held_b) == 1
    status, synced = await bob.get("/v3/sync", timeout="0")
    assert status == 200
    since = synced["next_batch"]

    # A message from Mallory that predates the ban: fine by the state before it.
    late = hostile_event(
        hs_a.signing_key,
        room_id,
        mallory.user_id,
        before_ban,
        auth,
        room_version=rv,
        depth=depth + 1,
        content={"msgtype": "m.text", "body": "sneaked in"},
    )
    from federation.hashing import compute_event_id

    late_id = compute_event_id(late, rv)
    txn = {"origin": hs_a.server_name, "origin_server_ts": 0, "pdus": [late]}
    answer = await hs_a.federation_client.put_json(
        hs_b.server_name, "/_matrix/federation/v1/send/softfail", txn
    )
    assert answer["pdus"] == {late_id: {}}

    async with hs_b.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT soft_failed, rejected_reason, stream_ordering FROM events WHERE event_id = %s",
            (late_id,),
        )
        assert await cur.fetchone() == (True, None, None)
    assert late_id not in await tips(hs_b, room_id)
    assert "sneaked in" not in texts(await history(bob, room_id))
    await bob.say(room_id, "after the ban")
    status, synced = await bob.get("/v3/sync", since=since, timeout="0")
    assert status == 200
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    assert texts(timeline) == ["after the ban"]
    assert late_id not in {e["event_id"] for e in timeline}
    assert await membership(bob, room_id, mallory.user_id) == "ban"


async def _member(user: RoomUser, room_id: str, target: str, expected: str) -> bool:
    return await membership(user, room_id, target) == expected
