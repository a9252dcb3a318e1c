"""Sliding sync connections and their positions (`pos`), kept in the database so a
connection survives a restart and is shared by every process serving the database.

A long-poll's answer may go out before its position is stored: the position's id is
taken first (`reserve_position`), in a transaction that holds an advisory lock on it
until the position is stored and committed (`commit_position`). A request that comes
with that id meanwhile, to any process, finds no position, and then waits on the lock
before it looks again (`load_position_in_flight`): it finds the position once
committed, or none if its transaction failed (the client starts again).
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.errors import LockNotAvailable
from psycopg.types.json import Jsonb

from homeserver.storage.core.pool import pipelined_transaction, roll_back


@dataclass(frozen=True, slots=True)
class Position:
    connection_id: int
    token: str
    # The connection's record as JSON text, parsed (`records`) only to compute an
    # answer; zlib-compressed (`held`) while a long-poll is held.
    rooms_json: bytes
    created_ts: int
    compressed: bool = False

    def records(self) -> dict[str, Any]:
        data = zlib.decompress(self.rooms_json) if self.compressed else self.rooms_json
        records: dict[str, Any] = orjson.loads(data)
        return records

    def held(self) -> Position:
        """This position as a held long-poll keeps it: its record compressed, about a
        quarter of the size (room ids repeat; 20 rooms: 3.7 KB to 1 KB), at some 30 µs
        to compress and to read again once woken."""
        if self.compressed:
            return self
        return replace(self, rooms_json=zlib.compress(self.rooms_json, 1), compressed=True)


async def load_position(
    conn: AsyncConnection, user_id: str, device_id: str, conn_id: str, position: int
) -> Position | None:
    """The position `position` of this device's connection `conn_id`, if it is kept."""
    return await _loaded(await _load_cursor(conn, user_id, device_id, conn_id, position))


async def _load_cursor(
    conn: AsyncConnection, user_id: str, device_id: str, conn_id: str, position: int
) -> AsyncCursor[Any]:
    return await conn.execute(
        "SELECT c.id, p.token, p.rooms::text, p.created_ts FROM sliding_sync_connections c"
        " JOIN sliding_sync_positions p ON p.connection_id = c.id"
        " WHERE c.user_id = %s AND c.device_id = %s AND c.conn_id = %s AND p.id = %s",
        (user_id, device_id, conn_id, position),
    )


async def _loaded(cur: AsyncCursor[Any]) -> Position | None:
    row = await cur.fetchone()
    if row is None:
        return None
    return Position(int(row[0]), row[1], row[2].encode(), int(row[3]))


# First key of the two-key advisory locks on positions being stored; the second is
# the position's id modulo 2**31 (ids that far apart share a lock: a needless wait).
_LOCK_NAMESPACE = 0x53537073  # "SSps"
# How long a request waits for a position being stored by another request.
IN_FLIGHT_WAIT = "5s"


async def load_position_in_flight(
    conn: AsyncConnection, user_id: str, device_id: str, conn_id: str, position: int
) -> Position | None:
    """`load_position`, once the transaction storing `position`, if one still is,
    has ended (None as well if the wait is too long)."""
    try:
        async with pipelined_transaction(conn):
            await conn.execute(f"SET LOCAL lock_timeout = '{IN_FLIGHT_WAIT}'")
            await conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, (%s::bigint %% 2147483648)::int)",
                (_LOCK_NAMESPACE, position),
            )
            cur = await _load_cursor(conn, user_id, device_id, conn_id, position)
    except LockNotAvailable:
        return None
    return await _loaded(cur)


@dataclass(frozen=True, slots=True)
class ReservedPosition:
    """A position's id taken ahead of storing it (`reserve_position`): read once the
    round trip it rode has been made."""

    cursor: AsyncCursor[Any]

    async def id(self) -> int:
        row = await self.cursor.fetchone()
        assert row is not None
        return int(row[0])


async def reserve_position(conn: AsyncConnection) -> ReservedPosition:
    """Begin the transaction that will store a new position, and take its id, locked
    until that transaction ends (sent without waiting: in a pipeline, the caller's
    round trip). Every statement on `conn` until `commit_position` is part of it."""
    await conn.execute("BEGIN")
    cur = await conn.execute(
        "SELECT s.id, pg_advisory_xact_lock(%s, (s.id %% 2147483648)::int)"
        " FROM (SELECT nextval('sliding_sync_positions_id_seq') AS id) s",
        (_LOCK_NAMESPACE,),
    )
    return ReservedPosition(cur)


async def commit_position(
    conn: AsyncConnection, save: Callable[[], Awaitable[Any]] | None = None
) -> None:
    """Store the reserved position (`save`, unless it was sent already) and commit, in
    one round trip; rolled back if that fails."""
    try:
        async with conn.pipeline():
            if save is not None:
                await save()
            await conn.execute("COMMIT")
    except BaseException:
        await roll_back(conn)
        raise


async def abandon_position(conn: AsyncConnection) -> None:
    """The reserved position will not be stored (nothing to answer yet): its
    transaction ends, and its lock with it."""
    await roll_back(conn)


@dataclass(frozen=True, slots=True)
class SavedPosition:
    """A position sent to be stored: its id is read once the statement has run, so
    that it can ride a pipeline's round trip with other statements."""

    cursor: AsyncCursor[Any]

    async def id(self) -> int:
        row = await self.cursor.fetchone()
        assert row is not None
        return int(row[0])


async def save_position(
    conn: AsyncConnection,
    key: tuple[str, str, str],
    connection_id: int | None,
    kept: int | None,
    token: str,
    rooms: dict[str, Any],
    now: int,
    reserved: int | None = None,
) -> SavedPosition:
    """Store a new position of the connection (user, device, conn_id), the new `pos`,
    in one statement.

    With `connection_id` (the client came with its position `kept`) the positions
    older than `kept` go: the client repeats `kept` if this answer is lost, and a
    newer one may be where the client is now (a long-poll it abandoned, answering
    late from `kept`, must not make it unknown). Without, the connection starts
    afresh and all its positions go. The commit does not wait for
    the disk (`synchronous_commit` off for this transaction): a position lost in a
    crash is only an unknown `pos`, which the client answers by starting again.
    `reserved`: the id taken for it by `reserve_position`, in this transaction.
    """
    user_id, device_id, conn_id = key
    cur = await conn.execute(
        "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)),"
        " made AS (INSERT INTO sliding_sync_connections"
        "  (user_id, device_id, conn_id, created_ts)"
        "  SELECT %(user)s, %(device)s, %(conn)s, %(now)s WHERE %(id)s::bigint IS NULL"
        "  ON CONFLICT (user_id, device_id, conn_id)"
        "  DO UPDATE SET created_ts = EXCLUDED.created_ts RETURNING id),"
        " c AS (SELECT id FROM made UNION ALL SELECT %(id)s::bigint WHERE %(id)s IS NOT NULL),"
        " old AS (DELETE FROM sliding_sync_positions p USING c"
        "  WHERE p.connection_id = c.id"
        "  AND (%(kept)s::bigint IS NULL OR p.id < %(kept)s))"
        " INSERT INTO sliding_sync_positions (id, connection_id, token, rooms, created_ts)"
        " SELECT COALESCE(%(reserved)s::bigint, nextval('sliding_sync_positions_id_seq')),"
        " c.id, %(token)s, %(rooms)s, %(now)s FROM c, quick RETURNING id",
        {
            "user": user_id,
            "device": device_id,
            "conn": conn_id,
            "now": now,
            "id": connection_id,
            "kept": kept,
            "token": token,
            # orjson: the connection's state is written with every answer.
            "rooms": Jsonb(rooms, dumps=orjson.dumps),
            "reserved": reserved,
        },
    )
    return SavedPosition(cur)
