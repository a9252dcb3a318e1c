"""Rooms and their forward extremities."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class RoomRow:
    room_id: str
    room_version: str
    creator: str | None
    is_public: bool
    current_state_group: int | None


async def insert_room(
    conn: AsyncConnection, room_id: str, room_version: str, creator: str, now_ms: int
) -> bool:
    """Whether the room's row was made here (False: a row with that id already exists)."""
    cur = await conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (room_id) DO NOTHING RETURNING 1",
        (room_id, room_version, creator, now_ms),
    )
    return await cur.fetchone() is not None


async def get_room(conn: AsyncConnection, room_id: str) -> RoomRow | None:
    cur = await conn.execute(
        "SELECT room_id, room_version, creator, is_public, current_state_group"
        " FROM rooms WHERE room_id = %s",
        (room_id,),
    )
    row = await cur.fetchone()
    return RoomRow(*row) if row else None


async def lock_room(conn: AsyncConnection, room_id: str) -> None:
    """Serialise writers of one room across processes, until the transaction ends."""
    await lock_rooms(conn, [room_id])


async def lock_rooms(conn: AsyncConnection, room_ids: Sequence[str]) -> None:
    """`lock_room` for each room, in the order given (callers give one order, so that
    two writers of the same rooms cannot deadlock), in one statement."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(r, 7)) FROM unnest(%s::text[]) AS r",
        (list(room_ids),),
    )


async def set_current_state_group(conn: AsyncConnection, room_id: str, group: int) -> None:
    await conn.execute(
        "UPDATE rooms SET current_state_group = %s WHERE room_id = %s", (group, room_id)
    )


async def get_forward_extremities(conn: AsyncConnection, room_id: str) -> list[tuple[str, int]]:
    """(event_id, depth) of the room's forward extremities, deepest first."""
    cur = await conn.execute(
        "SELECT f.event_id, e.depth FROM forward_extremities f"
        " JOIN events e USING (event_id) WHERE f.room_id = %s"
        " ORDER BY e.depth DESC, e.event_id",
        (room_id,),
    )
    return [(eid, int(depth)) for eid, depth in await cur.fetchall()]


async def get_rooms_and_extremities(
    conn: AsyncConnection, room_ids: Sequence[str]
) -> dict[str, tuple[RoomRow, list[tuple[str, int]]]]:
    """Per room that exists, its row and its forward extremities (deepest first), in
    one round trip: what a writer reads first, with the rooms' locks held."""
    cur = await conn.execute(
        "SELECT r.room_id, r.room_version, r.creator, r.is_public, r.current_state_group,"
        " x.event_id, x.depth FROM rooms r LEFT JOIN LATERAL ("
        " SELECT f.event_id, e.depth FROM forward_extremities f"
        " JOIN events e USING (event_id) WHERE f.room_id = r.room_id) x ON true"
        " WHERE r.room_id = ANY(%s) ORDER BY r.room_id, x.depth DESC, x.event_id",
        (list(room_ids),),
    )
    out: dict[str, tuple[RoomRow, list[tuple[str, int]]]] = {}
    for row in await cur.fetchall():
        room_id, *_, event_id, depth = row
        if room_id not in out:
            out[room_id] = (RoomRow(*row[:5]), [])
        if event_id is not None:
            out[room_id][1].append((event_id, int(depth)))
    return out


async def replace_forward_extremities(
    conn: AsyncConnection, room_id: str, removed: Iterable[str], added: str
) -> None:
    await conn.execute(
        "DELETE FROM forward_extremities WHERE room_id = %s AND event_id = ANY(%s)",
        (room_id, list(removed)),
    )
    await conn.execute(
        "INSERT INTO forward_extremities (room_id, event_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING",
        (room_id, added),
    )
