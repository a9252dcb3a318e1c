"""Session settings of our PostgreSQL connections, read back from the server itself.

JIT compilation is off on every connection, pooled or dedicated: the planner's row
estimates for our batched `unnest` and recursive queries run to millions, and compiling
them cost a second where running took 60 ms (an initial sync of 1,000 rooms)."""

from __future__ import annotations

from collections.abc import Callable

from homeserver.storage.core.pool import Database, connect


async def test_pooled_and_dedicated_connections_run_without_jit(
    database_factory: Callable[[], str],
) -> None:
    conninfo = database_factory()
    db = Database(conninfo, size=2)
    await db.open()
    try:
        async with db.pool.connection() as conn:
            row = await (await conn.execute("SHOW jit")).fetchone()
            assert row is not None and row[0] == "off"
    finally:
        await db.close()
    dedicated = await connect(conninfo)
    try:
        row = await (await dedicated.execute("SHOW jit")).fetchone()
        assert row is not None and row[0] == "off"
    finally:
        await dedicated.close()


async def test_a_request_after_another_gets_the_connection_that_served_it(
    database_factory: Callable[[], str],
) -> None:
    """The connection just returned is the next handed out (its statements prepared and
    planned), while the pool keeps others for concurrent requests."""
    db = Database(database_factory(), size=4)
    await db.open()
    try:
        async with db.pool.connection() as first, db.pool.connection() as second:
            held = {first.pgconn.backend_pid, second.pgconn.backend_pid}
            assert len(held) == 2
        async with db.pool.connection() as conn:
            last = conn.pgconn.backend_pid
        for _ in range(5):
            async with db.pool.connection() as conn:
                assert conn.pgconn.backend_pid == last
            # Another connection served meanwhile (it stays warm for the next too).
            async with db.pool.connection() as a, db.pool.connection() as b:
                assert {a.pgconn.backend_pid, b.pgconn.backend_pid} == held
                last = a.pgconn.backend_pid  # returned last
    finally:
        await db.close()
