"""Allocating stream positions and finding the highest one safe to read up to.

See schema/versions/0004_streams.py for the scheme. Allocation runs in its own
one-statement transaction (with asynchronous commit on the allocator's connection:
its WAL is flushed by the durable commit of the data that uses the position), so
the writer's main transaction can commit in parallel with others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection

STREAMS = ("events", "account_data", "receipts", "to_device", "device_lists", "presence")


async def prepare_allocator(conn: AsyncConnection) -> None:
    """For a new allocator connection: its commits need not wait for the disk, and
    in-flight rows of allocator connections that died (a database restart) go. Those
    can no longer commit and are ignored already, but would hold readers back again if
    a new backend came to reuse a dead one's process id."""
    await conn.execute("SET synchronous_commit = off")
    await conn.execute(
        "DELETE FROM stream_inflight WHERE backend_pid NOT IN (SELECT pid FROM pg_stat_activity)"
    )


async def allocate(conn: AsyncConnection, stream: str, count: int = 1) -> list[int]:
    """Reserve `count` positions in one round trip; `conn` must be in autocommit mode.

    The counter bump and the in-flight rows commit together, so a reader never sees a
    counter that covers a position not yet registered as in flight.
    """
    cur = await conn.execute(
        "WITH bumped AS ("
        " UPDATE stream_positions SET position = position + %(count)s"
        " WHERE stream = %(stream)s RETURNING position)"
        " INSERT INTO stream_inflight (stream, position, backend_pid)"
        " SELECT %(stream)s, g, pg_backend_pid() FROM bumped,"
        " generate_series(bumped.position - %(count)s + 1, bumped.position) AS g"
        " RETURNING position",
        {"stream": stream, "count": count},
    )
    positions = sorted(int(row[0]) for row in await cur.fetchall())
    if not positions:
        raise LookupError(f"unknown stream {stream}")
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


_SAFE_POSITIONS = (
    "SELECT p.stream, p.position, min(i.position) FROM stream_positions p"
    " LEFT JOIN stream_inflight i ON i.stream = p.stream"
    " AND i.backend_pid IN (SELECT pid FROM pg_stat_activity)"
    " GROUP BY p.stream, p.position"
)


async def safe_positions(conn: AsyncConnection) -> dict[str, int]:
    """Per stream, the highest position below which everything is committed.

    In-flight rows of backends that no longer exist (a crashed writer) are ignored.
    """
    cur = await conn.execute(_SAFE_POSITIONS)
    return _positions(await cur.fetchall())


def _positions(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for stream, position, lowest in rows:
        out[stream] = int(position) if lowest is None else int(lowest) - 1
    return out


Write = tuple[str, Sequence[Any]]
"""A statement that returns nothing, and its parameters (positional), for a caller that
makes it part of another statement (a data-modifying CTE)."""


async def publish_and_read_at_commit(
    conn: AsyncConnection,
    channel: str,
    payload: str,
    finished: Mapping[str, Sequence[int]],
    writes: Sequence[Write] = (),
) -> Callable[[], Awaitable[dict[str, int]]]:
    """Queue, in a transaction in pipeline mode and without waiting, one statement: the
    transaction's last `writes`, the `finished` positions (per stream) marked used (as
    `finish`), a notification (PostgreSQL sends it when the transaction commits) and a
    read of the safe positions as they are just before the commit, which counts the
    positions this transaction finished as committed. The returned function fetches
    that read once the pipeline has synced (the commit's own round trip): an
    announcement that costs the writer no round trip, nor statement, of its own."""
    # Per stream, its positions: the primary key finds them (as in `finish`).
    ours = " OR ".join(["({t}.stream = %s AND {t}.position = ANY(%s::bigint[]))"] * len(finished))
    ours_params = [x for stream in sorted(finished) for x in (stream, list(finished[stream]))]
    ctes = "".join(f" w{i} AS ({write})," for i, (write, _) in enumerate(writes))
    cur = await conn.execute(
        f"WITH{ctes}"
        f" done AS (DELETE FROM stream_inflight d WHERE {ours.format(t='d') or 'false'}),"
        # A CTE calling a volatile function runs once, and is never inlined away.
        " sent AS (SELECT pg_notify(%s, %s))"
        " SELECT p.stream, p.position, min(i.position) FROM sent, stream_positions p"
        " LEFT JOIN stream_inflight i ON i.stream = p.stream"
        " AND i.backend_pid IN (SELECT pid FROM pg_stat_activity)"
        # The query does not see the DELETE's effect: it leaves those positions out itself.
        f" AND NOT ({ours.format(t='i') or 'false'})"
        " GROUP BY p.stream, p.position",
        (
            *(p for _, params in writes for p in params),
            *ours_params,
            channel,
            payload,
            *ours_params,
        ),
    )

    async def fetch() -> dict[str, int]:
        return _positions(await cur.fetchall())

    return fetch


async def listen(conn: AsyncConnection, channel: str) -> None:
    await conn.execute(f"LISTEN {channel}")


async def publish(conn: AsyncConnection, channel: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def publish_and_read(
    conn: AsyncConnection, channel: str, payloads: list[str]
) -> dict[str, int]:
    """Publish notifications and read the safe positions after them, in one round trip
    (pipeline mode): a writer's announcement costs one wait for the database, not two."""
    async with conn.pipeline():
        await _notify(conn, channel, payloads)
        return await safe_positions(conn)


async def _notify(conn: AsyncConnection, channel: str, payloads: list[str]) -> None:
    if payloads:
        await conn.execute(
            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
            (channel, payloads),
        )
