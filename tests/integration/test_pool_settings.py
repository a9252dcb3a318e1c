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
