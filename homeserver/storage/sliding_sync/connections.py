"""Sliding sync connections and their positions (`pos`), kept in the database so a
connection survives a restart and is shared by every process serving the database."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb


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
    cur = await conn.execute(
        "SELECT c.id, p.token, p.rooms::text, p.created_ts FROM sliding_sync_connections c"
        " JOIN sliding_sync_positions p ON p.connection_id = c.id"
        " WHERE c.user_id = %s AND c.device_id = %s AND c.conn_id = %s AND p.id = %s",
        (user_id, device_id, conn_id, position),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Position(int(row[0]), row[1], row[2].encode(), int(row[3]))


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
        " INSERT INTO sliding_sync_positions (connection_id, token, rooms, created_ts)"
        " SELECT c.id, %(token)s, %(rooms)s, %(now)s FROM c, quick RETURNING id",
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
        },
    )
    return SavedPosition(cur)
