"""Sliding sync connections and their positions (`pos`), kept in the database so a
connection survives a restart and is shared by every process serving the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class Position:
    connection_id: int
    token: str
    rooms: dict[str, Any]
    created_ts: int


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
    return Position(int(row[0]), row[1], orjson.loads(row[2]), int(row[3]))


async def new_connection(
    conn: AsyncConnection, user_id: str, device_id: str, conn_id: str, now: int
) -> int:
    """Start the connection afresh: whatever it had before is forgotten."""
    await conn.execute(
        "DELETE FROM sliding_sync_connections WHERE user_id = %s AND device_id = %s"
        " AND conn_id = %s",
        (user_id, device_id, conn_id),
    )
    cur = await conn.execute(
        "INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, created_ts)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (user_id, device_id, conn_id, now),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def save_position(
    conn: AsyncConnection,
    connection_id: int,
    token: str,
    rooms: dict[str, Any],
    now: int,
    kept: int | None,
) -> int:
    """Store a new position; of the older ones only `kept` (the one the client came
    with, which it may repeat if this answer is lost) stays. Returns the new `pos`."""
    cur = await conn.execute(
        "INSERT INTO sliding_sync_positions (connection_id, token, rooms, created_ts)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (connection_id, token, Jsonb(rooms), now),
    )
    row = await cur.fetchone()
    assert row is not None
    new = int(row[0])
    await conn.execute(
        "DELETE FROM sliding_sync_positions WHERE connection_id = %s AND id <> %s"
        " AND id IS DISTINCT FROM %s",
        (connection_id, new, kept),
    )
    return new
