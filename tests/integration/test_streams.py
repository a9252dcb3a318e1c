"""Stream positions: readers never advance past a position whose data is not committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg

from homeserver.api.context import HOMESERVER
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Database
from tests.integration.conftest import RoomUser


async def test_safe_position_waits_for_slow_writer(database_factory: Callable[[], str]) -> None:
    conninfo = database_factory()
    alloc = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    slow = await psycopg.AsyncConnection.connect(conninfo)
    fast = await psycopg.AsyncConnection.connect(conninfo)
    reader = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        [first] = await streams.allocate(alloc, "events")
        [second] = await streams.allocate(alloc, "events")
        assert second == first + 1
        assert (await streams.safe_positions(reader))["events"] == first - 1

        # The later writer commits first: readers must still stop before `first`.
        await streams.finish(fast, "events", [second])
        await fast.commit()
        assert (await streams.safe_positions(reader))["events"] == first - 1

        await streams.finish(slow, "events", [first])
        await slow.commit()
        assert (await streams.safe_positions(reader))["events"] == second

        # A writer that gives up releases its position.
        [third] = await streams.allocate(alloc, "events")
        assert (await streams.safe_positions(reader))["events"] == second
        await streams.abandon(alloc, "events", [third])
        assert (await streams.safe_positions(reader))["events"] == third
    finally:
        for conn in (alloc, slow, fast, reader):
            await conn.close()


async def test_positions_of_a_dead_connection_do_not_block(
    database_factory: Callable[[], str],
) -> None:
    conninfo = database_factory()
    doomed = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    reader = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        [position] = await streams.allocate(doomed, "receipts")
        assert (await streams.safe_positions(reader))["receipts"] == position - 1
        await doomed.close()
        # The backend leaves pg_stat_activity shortly after the client disconnects.
        for _ in range(100):
            if (await streams.safe_positions(reader))["receipts"] == position:
                break
            await asyncio.sleep(0.02)
        assert (await streams.safe_positions(reader))["receipts"] == position
    finally:
        await reader.close()


async def test_a_writers_next_sync_includes_its_write(
    homeserver_client: Callable[..., Any],
) -> None:
    """Read-your-writes: while another writer still holds an earlier events position,
    a room created just before a sync is in that sync (the sync waits for the
    position of the write, not only for what every writer has committed)."""
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    status, body = await alice.get("/v3/sync")
    assert status == 200, body
    hs = client.app[HOMESERVER]
    slow = await psycopg.AsyncConnection.connect(hs.db.conninfo, autocommit=True)
    try:
        [held] = await streams.allocate(slow, "events")  # a concurrent, slower writer
        room_id = await alice.create_room()

        async def slow_writer_finishes() -> None:
            await asyncio.sleep(0.3)
            await streams.abandon(slow, "events", [held])

        finishing = asyncio.create_task(slow_writer_finishes())
        status, body = await alice.get("/v3/sync", since=body["next_batch"], timeout="0")
        await finishing
    finally:
        await slow.close()
    assert status == 200, body
    assert room_id in body.get("rooms", {}).get("join", {})


async def test_concurrent_allocations_share_statements_and_a_cancelled_one_is_released(
    database_factory: Callable[[], str],
) -> None:
    """Allocations queued behind one in flight are served together; positions given to
    a caller that stopped waiting are released, so readers are not held back."""
    conninfo = database_factory()
    db = Database(conninfo, size=2)
    await db.open()
    allocator = StreamAllocator(db)
    reader = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        [start] = await allocator.allocate("events")
        await allocator.abandon("events", [start])
        calls = (allocator.allocate("events", 1 + n % 3) for n in range(12))
        results = await asyncio.gather(*calls)
        positions = [p for got in results for p in got]
        assert [len(got) for got in results] == [1 + n % 3 for n in range(12)]
        assert len(set(positions)) == len(positions) and min(positions) > start
        assert all(got == sorted(got) for got in results)

        # One allocation in flight; two queue behind it, and the second of them stops
        # waiting while the first serves them both.
        holder = asyncio.ensure_future(allocator.allocate("events"))
        await asyncio.sleep(0)
        server = asyncio.ensure_future(allocator.allocate("events"))
        doomed = asyncio.ensure_future(allocator.allocate("events", 2))
        await asyncio.sleep(0)
        positions += await holder
        for _ in range(1000):
            if allocator._lock.locked():  # `server` has taken the queue
                break
            await asyncio.sleep(0)
        doomed.cancel()
        positions += await server

        cur = await reader.execute("SELECT count(*) FROM stream_inflight")
        assert (await cur.fetchone()) == (len(positions),)
        await allocator.abandon("events", positions)
        [last] = await allocator.allocate("events")
        # Nothing but `last` is in flight: not the positions of the cancelled caller.
        assert (await streams.safe_positions(reader))["events"] == last - 1
    finally:
        await reader.close()
        await allocator.close()
        await db.close()


async def test_announcements_from_inside_transactions_wake_both_of_two_racing_writers(
    database_factory: Callable[[], str],
) -> None:
    """Writes announced from inside their transactions read the safe positions before
    they commit. Two writers whose reads each see the other in flight, the later
    position committing first: once both committed, both rooms' waiters are woken
    (the last to commit looks again after its commit)."""
    conninfo = database_factory()
    db = Database(conninfo, size=2)
    await db.open()
    notifier = Notifier(db)
    await notifier.start()
    alloc = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    first_conn = await psycopg.AsyncConnection.connect(conninfo)
    second_conn = await psycopg.AsyncConnection.connect(conninfo)
    try:
        [first] = await streams.allocate(alloc, "events")
        [second] = await streams.allocate(alloc, "events")
        waits = {
            room: asyncio.ensure_future(notifier.wait(f"@{room}:x", [f"!{room}:x"], 10))
            for room in ("a", "b")
        }
        await asyncio.sleep(0)
        # Both read the positions while the other's is in flight.
        await streams.finish(first_conn, "events", [first])
        first_news = await notifier.announce_at_commit(first_conn, "events", first, rooms=["!a:x"])
        await streams.finish(second_conn, "events", [second])
        second_news = await notifier.announce_at_commit(
            second_conn, "events", second, rooms=["!b:x"]
        )
        # The later position commits first: nothing it announced is readable yet.
        await second_conn.commit()
        await second_news.read()
        await notifier.announced(second_news)
        await asyncio.sleep(0.05)
        assert not waits["b"].done()
        await first_conn.commit()
        await first_news.read()
        await notifier.announced(first_news)
        assert await asyncio.wait_for(waits["a"], 5) is True
        assert await asyncio.wait_for(waits["b"], 5) is True
        assert notifier.positions["events"] >= second
    finally:
        for conn in (alloc, first_conn, second_conn):
            await conn.close()
        await notifier.stop()
        await db.close()
