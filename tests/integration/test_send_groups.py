"""Group commit of sends: concurrent sends, into one room or many, are written together
in one transaction. Each room still gets a single chain of events in send order, each
request its own answer (a failing send fails alone), and a retransmitted txn id the
first answer."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import CLIENT_V3, RoomUser

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def put(user: RoomUser, room_id: str, txn: str, body: str) -> tuple[int, Any]:
    resp = await user.client.put(
        f"{CLIENT_V3}/rooms/{room_id}/send/m.room.message/{txn}",
        json={"msgtype": "m.text", "body": body},
        headers=user.headers,
    )
    return resp.status, await resp.json()


async def room_chain(client: Client, room_id: str) -> list[tuple[str, int, str, list[str]]]:
    """The room's events in stream order: (event id, depth, writing transaction,
    prev events)."""
    async with client.app[HOMESERVER].db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT e.event_id, e.depth, e.xmin::text, coalesce(array_agg(p.prev_event_id)"
            " FILTER (WHERE p.prev_event_id IS NOT NULL), '{}')"
            " FROM events e LEFT JOIN event_edges p USING (event_id)"
            " WHERE e.room_id = %s GROUP BY e.event_id ORDER BY e.stream_ordering",
            (room_id,),
        )
        return [
            (eid, int(depth), xid, list(prevs)) for eid, depth, xid, prevs in await cur.fetchall()
        ]


async def extremities(client: Client, room_id: str) -> list[str]:
    async with client.app[HOMESERVER].db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id FROM forward_extremities WHERE room_id = %s", (room_id,)
        )
        return [row[0] for row in await cur.fetchall()]


async def assert_single_chain(client: Client, room_id: str) -> list[str]:
    """Each event cites the one before it in stream order, one deeper: the DAG of a room
    written by one server alone. The event ids in order."""
    chain = await room_chain(client, room_id)
    for (before, depth, _, _), (_, next_depth, _, prevs) in itertools.pairwise(chain):
        assert prevs == [before]
        assert next_depth == depth + 1
    assert await extremities(client, room_id) == [chain[-1][0]]
    return [eid for eid, *_ in chain]


async def test_concurrent_sends_into_many_rooms_share_commits_and_keep_each_chain(
    client: Client,
) -> None:
    alice = await RoomUser.make(client, "alice")
    rooms = [await alice.create_room() for _ in range(8)]
    sends = [(rooms[n % 8], f"g{n}", f"message {n}") for n in range(24)]
    answers = await asyncio.gather(*(put(alice, *send) for send in sends))
    assert [status for status, _ in answers] == [200] * 24
    sent = {
        body: answer["event_id"] for (_, _, body), (_, answer) in zip(sends, answers, strict=True)
    }

    rooms_of_commit: dict[str, set[str]] = {}
    for room_id in rooms:
        order = await assert_single_chain(client, room_id)
        mine = [sent[body] for rid, _, body in sends if rid == room_id]
        # Each room's sends are in its chain, each once.
        assert set(mine) <= set(order) and len(order) == len(set(order))
        for eid, _, xid, _ in await room_chain(client, room_id):
            if eid in mine:
                rooms_of_commit.setdefault(xid, set()).add(room_id)
    # Sends that waited for one another were committed together, across rooms.
    assert max(len(written) for written in rooms_of_commit.values()) > 1


async def test_a_failing_send_fails_alone_and_positions_move_on(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    rooms = [await alice.create_room() for _ in range(3)]
    closed = await bob.create_room()
    # A send the database refuses, inside the group's transaction.
    async with client.app[HOMESERVER].db.pool.connection() as conn:
        await conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'poisoned'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW"
            " WHEN (NEW.json LIKE '%%poison%%') EXECUTE FUNCTION refuse_poison()"
        )
    sends = [(rooms[n % 3], f"ok{n}", f"fine {n}") for n in range(12)]
    sends.insert(5, (rooms[1], "bad", "poison"))
    sends.insert(8, (closed, "notmine", "not a member"))
    answers = await asyncio.gather(*(put(alice, *send) for send in sends))
    status = {body: code for (_, _, body), (code, _) in zip(sends, answers, strict=True)}
    assert status.pop("poison") == 500
    assert status.pop("not a member") == 403
    assert set(status.values()) == {200}

    stored: set[str] = set()
    for room_id in rooms:
        stored |= set(await assert_single_chain(client, room_id))
    ids = {
        answer["event_id"]
        for (_, _, body), (_, answer) in zip(sends, answers, strict=True)
        if body in status
    }
    assert ids <= stored
    # The positions the refused event took hold nobody back: a sync sees what came after.
    last = await alice.say(rooms[1], "after")
    code, synced = await alice.get("/v3/sync")
    assert code == 200
    timeline = synced["rooms"]["join"][rooms[1]]["timeline"]["events"]
    assert timeline[-1]["event_id"] == last
    assert all(e["content"].get("body") != "poison" for e in timeline)


async def test_retransmissions_during_a_group_get_the_first_answer(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    rooms = [await alice.create_room() for _ in range(3)]
    earlier = {
        n: (await put(alice, rooms[n % 3], f"t{n}", f"m{n}"))[1]["event_id"] for n in range(3)
    }
    # Old txn ids again, and new ones twice each, all at once, in three rooms.
    sends = [(rooms[n % 3], f"t{n}", f"m{n}") for n in range(12) for _ in range(2)]
    answers = await asyncio.gather(*(put(alice, *send) for send in sends))
    assert {status for status, _ in answers} == {200}
    by_txn: dict[str, set[str]] = {}
    for (_, txn, _), (_, answer) in zip(sends, answers, strict=True):
        by_txn.setdefault(txn, set()).add(answer["event_id"])
    assert all(len(ids) == 1 for ids in by_txn.values())
    assert all(by_txn[f"t{n}"] == {earlier[n]} for n in earlier)
    for room_id in rooms:
        order = await assert_single_chain(client, room_id)
        mine = {eid for (rid, txn, _) in sends if rid == room_id for eid in by_txn[txn]}
        assert mine <= set(order)
        # One event per txn id: no retransmission was stored as a second message.
        chain_bodies = await room_messages(alice, room_id)
        assert sorted(chain_bodies) == sorted({body for rid, _, body in sends if rid == room_id})


async def room_messages(user: RoomUser, room_id: str) -> list[str]:
    status, page = await user.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="100")
    assert status == 200
    return [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]


async def test_a_room_held_by_another_writer_holds_up_only_its_own_sends(
    client: Client,
) -> None:
    alice = await RoomUser.make(client, "alice")
    held, free = await alice.create_room(), await alice.create_room()
    writer = client.app[HOMESERVER].writer
    release = asyncio.Event()

    async def hold() -> None:
        # Another writer of the room, such as a join storing the room's state.
        async with writer.writer(held):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(put(alice, held, f"h{n}", f"held {n}")) for n in range(3)]
    # Were the free room's sends grouped with the held room's, they would wait too.
    others = await asyncio.wait_for(
        asyncio.gather(*(put(alice, free, f"f{n}", f"free {n}") for n in range(3))), 20
    )
    assert {status for status, _ in others} == {200}
    assert not any(task.done() for task in waiting)
    release.set()
    await holder
    answers = await asyncio.gather(*waiting)
    assert {status for status, _ in answers} == {200}
    order = await assert_single_chain(client, held)
    assert {answer["event_id"] for _, answer in answers} <= set(order)
