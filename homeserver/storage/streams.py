"""Allocating stream positions and finding the highest one safe to read up to.

See schema/versions/0004_streams.py for the scheme. Allocation runs in its own
short transaction (asynchronous commit: its WAL is flushed by the durable commit of
the data that uses the position), so the writer's main transaction can commit in
parallel with others.
"""

from __future__ import annotations

from psycopg import AsyncConnection

STREAMS = ("events", "account_data", "receipts", "to_device", "device_lists", "presence")


async def allocate(conn: AsyncConnection, stream: str, count: int = 1) -> list[int]:
    """Reserve `count` positions; `conn` must not be inside a transaction."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        cur = await conn.execute(
            "UPDATE stream_positions SET position = position + %s WHERE stream = %s"
            " RETURNING position",
            (count, stream),
        )
        row = await cur.fetchone()
        if row is None:
            raise LookupError(f"unknown stream {stream}")
        last = int(row[0])
        positions = list(range(last - count + 1, last + 1))
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO stream_inflight (stream, position, backend_pid)"
                " VALUES (%s, %s, pg_backend_pid())",
                [(stream, p) for p in positions],
            )
    return positions


async def finish(conn: AsyncConnection, stream: str, positions: list[int]) -> None:
    """Mark positions used; call inside the transaction that writes their data."""
    await conn.execute(
        "DELETE FROM stream_inflight WHERE stream = %s AND position = ANY(%s)",
        (stream, positions),
    )


async def abandon(conn: AsyncConnection, stream: str, positions: list[int]) -> None:
    """Release positions whose transaction rolled back (outside any transaction)."""
    await conn.execute(
        "DELETE FROM stream_inflight WHERE stream = %s AND position = ANY(%s)",
        (stream, positions),
    )


async def safe_positions(conn: AsyncConnection) -> dict[str, int]:
    """Per stream, the highest position below which everything is committed.

    In-flight rows of backends that no longer exist (a crashed writer) are ignored.
    """
    cur = await conn.execute(
        "SELECT p.stream, p.position, min(i.position) FROM stream_positions p"
        " LEFT JOIN stream_inflight i ON i.stream = p.stream"
        " AND i.backend_pid IN (SELECT pid FROM pg_stat_activity)"
        " GROUP BY p.stream, p.position"
    )
    out: dict[str, int] = {}
    for stream, position, lowest in await cur.fetchall():
        out[stream] = int(position) if lowest is None else int(lowest) - 1
    return out


async def listen(conn: AsyncConnection, channel: str) -> None:
    await conn.execute(f"LISTEN {channel}")


async def publish(conn: AsyncConnection, channel: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
