"""Across two of our servers on loopback, the inbound paths that only show when delivery
is not neat: a gap filled with /get_missing_events, a fork of concurrent state changes
resolved the same way on both sides, and a soft-failed event (allowed by the state
before it, not by our current state) kept out of clients' sight."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from federation.room_versions import get_room_version
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.reads import pdu_of
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms, state
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

    async def queue_pdu(conn: Any, destinations: Any, event_id: str) -> list[str]:
        held.append(event_id)
        return []

    monkeypatch.setattr(hs.remote_sender, "queue_pdu", queue_pdu)
    return held


async def deliver(src: Homeserver, dst: Homeserver, event_ids: list[str]) -> dict[str, Any]:
    """PUT `src`'s events to `dst` in one transaction, in this order; the per-PDU answer."""
    pdus = [(await src.reads.pdus([e]))[0] for e in event_ids]
    txn = {"origin": src.server_name, "origin_server_ts": 0, "pdus": pdus}
    path = f"/_matrix/federation/v1/send/gaps{next(_txn_ids)}"
    answer = await src.remote_client.put_json(dst.server_name, path, txn)
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
    missing_events = hs_a.reads.missing_events

    async def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs or {"args": args})
        return await missing_events(*args, **kwargs)

    monkeypatch.setattr(hs_a.reads, "missing_events", spy)
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
    answer = await hs_a.remote_client.put_json(
        hs_b.server_name, "/_matrix/federation/v1/send/softfail", txn
    )
    assert answer["pdus"] == {late_id: {}}

    async with hs_b.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT soft_failed, rejected_reason, stream_ordering FROM events WHERE event_id = %s",
            (late_id,),
        )
        assert await cur.fetchone() == (True, None, None)
    current_tips = await tips(hs_b, room_id)
    assert current_tips and late_id not in current_tips
    seen = await history(bob, room_id)
    assert seen and late_id not in {e["event_id"] for e in seen}
    assert "sneaked in" not in texts(seen)
    await bob.say(room_id, "after the ban")
    status, synced = await bob.get("/v3/sync", since=since, timeout="0")
    assert status == 200
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    assert texts(timeline) == ["after the ban"]
    assert late_id not in {e["event_id"] for e in timeline}
    assert await membership(bob, room_id, mallory.user_id) == "ban"


async def _member(user: RoomUser, room_id: str, target: str, expected: str) -> bool:
    return await membership(user, room_id, target) == expected


async def _holds(hs: Homeserver, event_id: str) -> bool:
    """Whether `event_id` is in hs's timeline (looked up without paging /messages,
    which would backfill)."""
    async with hs.db.pool.connection() as conn:
        row = (await event_store.get_events(conn, [event_id])).get(event_id)
    return row is not None and row.stream_ordering is not None


async def every_page(
    user: RoomUser, room_id: str, *, limit: int, forward: bool = False
) -> list[dict[str, Any]]:
    """Every event /messages gives, paging from one end of the room to the other, in
    the order of the pages (newest first backwards)."""
    chunk: list[dict[str, Any]] = []
    params = {"dir": "f" if forward else "b", "limit": str(limit)}
    for _ in range(200):
        status, page = await user.get(f"/v3/rooms/{room_id}/messages", **params)
        assert status == 200, page
        chunk.extend(page["chunk"])
        if "end" not in page:
            return chunk
        params["from"] = page["end"]
    raise AssertionError("paging did not reach the end of the room")


async def hole_in_b(
    a: Client, b: Client, monkeypatch: pytest.MonkeyPatch, count: int
) -> tuple[RoomUser, RoomUser, str, list[str]]:
    """B misses `count` of alice's messages (A holds them back), then gets the one after
    them: B fetches the last MISSING_EVENTS_LIMIT with /get_missing_events and bridges
    the rest, a hole in the middle of its timeline. The ids alice sent, in order."""
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice, bob, room_id = await joined_across(a, b)
    await alice.say(room_id, "before the gap")
    await eventually(lambda: _has(bob, room_id, "before the gap"))
    held = hold_outbound(monkeypatch, hs_a)
    ids = [await alice.say(room_id, f"in the gap {i}") for i in range(count)]
    assert held == ids
    monkeypatch.undo()
    ids.append(await alice.say(room_id, "after the gap"))
    await eventually(lambda: _holds(hs_b, ids[-1]))
    async with hs_b.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, ids)
    assert sum(1 for r in rows.values() if r.stream_ordering is not None) < count // 2
    return alice, bob, room_id, ids


async def test_paging_back_fills_a_hole_in_the_middle_of_the_timeline(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice, bob, room_id = await joined_across(a, b)
    await alice.say(room_id, "before the gap")
    await eventually(lambda: _has(bob, room_id, "before the gap"))

    # B is cut off while A's room gets 50 messages, and a redaction of one of them
    # among them (deep enough in the hole that B does not get it on receipt).
    held = hold_outbound(monkeypatch, hs_a)
    sent = [f"in the gap {i}" for i in range(50)]
    ids = [await alice.say(room_id, text) for text in sent[:20]]
    redacted_in_gap = await alice.redact(room_id, ids[5])
    ids += [await alice.say(room_id, text) for text in sent[20:]]
    assert held == [*ids[:20], redacted_in_gap, *ids[20:]]
    monkeypatch.undo()
    # Then B hears of the next events: the last ten with /get_missing_events, the rest
    # of the gap bridged (B does not hold those messages).
    after = await alice.say(room_id, "after the gap")
    await eventually(lambda: _holds(hs_b, after))
    # A redaction of an event inside the hole reaches B before the event does.
    late_redaction = await alice.redact(room_id, ids[3])
    await eventually(lambda: _holds(hs_b, late_redaction))
    async with hs_b.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, [*ids, redacted_in_gap])
    assert sum(1 for r in rows.values() if r.stream_ordering is not None) <= 10
    assert redacted_in_gap not in rows and ids[3] not in rows and ids[5] not in rows

    # Bob pages back through the whole room: every event once, in A's order.
    on_b = await every_page(bob, room_id, limit=7)
    on_a = await every_page(alice, room_id, limit=50)
    assert [e["event_id"] for e in on_b] == [e["event_id"] for e in on_a]
    assert len({e["event_id"] for e in on_b}) == len(on_b)
    bodies = [e["content"].get("body") for e in reversed(on_b) if e["type"] == "m.room.message"]
    expected = ["before the gap", *sent, "after the gap"]
    expected[1 + 3] = expected[1 + 5] = None  # redacted: no content left
    assert bodies == expected
    by_id = {e["event_id"]: e for e in on_b}
    for target in (ids[3], ids[5]):
        assert by_id[target]["content"] == {}
        assert by_id[target]["unsigned"]["redacted_because"]["redacts"] == target
    assert by_id[redacted_in_gap]["type"] == "m.room.redaction"
    # Forwards from the start, the same events in the same order (nothing to fill now).
    forwards = await every_page(bob, room_id, limit=9, forward=True)
    assert [e["event_id"] for e in forwards] == [e["event_id"] for e in reversed(on_b)]


async def test_paging_forwards_fills_a_hole_too(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    alice, bob, room_id, ids = await hole_in_b(a, b, monkeypatch, 30)
    forwards = await every_page(bob, room_id, limit=8, forward=True)
    on_a = await every_page(alice, room_id, limit=50, forward=True)
    assert [e["event_id"] for e in forwards] == [e["event_id"] for e in on_a]
    assert [e["event_id"] for e in forwards][-len(ids) :] == ids


async def test_a_hole_whose_only_server_is_unreachable_does_not_hang_pages(
    two: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    hs_a, hs_b = hs_of(a), hs_of(b)
    alice, bob, room_id, ids = await hole_in_b(a, b, monkeypatch, 30)
    on_a = [e["event_id"] for e in await every_page(alice, room_id, limit=50)]
    assert set(ids) <= set(on_a)
    async with hs_b.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, on_a)
    # A's address now takes connections and never answers (a partition, not a refusal).
    port = int(hs_a.server_name.rsplit(":", 1)[1])
    await a.close()
    stalled: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    blackhole = await asyncio.start_server(never_answer, "127.0.0.1", port)
    hs_b.backfill.page_wait = 1.5
    hs_b.backfill.request_timeout = 1.0
    try:
        began = time.monotonic()
        first = await every_page(bob, room_id, limit=10)
        took = time.monotonic() - began
        assert stalled, "B never tried to backfill from A"
        # The hole costs one bounded wait; what B holds comes back once each, newest
        # first, and the page after the hole carries on with what B held before it.
        assert took < hs_b.backfill.page_wait + 2.0
        held_ids = [e for e in on_a if e in rows and rows[e].stream_ordering is not None]
        assert [e["event_id"] for e in first] == held_ids
        assert texts(first)[0] == "after the gap" and "before the gap" in texts(first)
        # The holes are remembered as unfillable for now: paging again does not wait.
        began = time.monotonic()
        again = await every_page(bob, room_id, limit=10)
        assert time.monotonic() - began < 1.0
        assert [e["event_id"] for e in again] == held_ids
    finally:
        blackhole.close()
        for writer in stalled:
            writer.close()
