"""Rooms joined with partial state, the rows the full-state fetch rewrites, and the
advisory lock that makes one process of a cluster the one fetching a room's state."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class PartialRoom:
    room_id: str
    join_event_id: str
    joined_via: str
    servers: list[str]


@dataclass(frozen=True, slots=True)
class LaterEvent:
    """An event placed in the room after our join, with the state group it got."""

    event_id: str
    stream_ordering: int
    state_group: int | None


_COLUMNS = "room_id, join_event_id, joined_via, servers"
# First key of the two-key advisory lock form: a namespace for full-state fetches.
_LOCK_NAMESPACE = 0x50537446  # "PStF"


async def mark_partial(
    conn: AsyncConnection,
    room_id: str,
    join_event_id: str,
    joined_via: str,
    servers: list[str],
    now_ms: int,
) -> None:
    await conn.execute(
        f"INSERT INTO partial_state_rooms ({_COLUMNS}, since_ts) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (room_id) DO UPDATE SET join_event_id = EXCLUDED.join_event_id,"
        " joined_via = EXCLUDED.joined_via, servers = EXCLUDED.servers, full_at = NULL",
        (room_id, join_event_id, joined_via, servers, now_ms),
    )


async def get_partial(conn: AsyncConnection, room_id: str) -> PartialRoom | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM partial_state_rooms WHERE room_id = %s AND full_at IS NULL",
        (room_id,),
    )
    row = await cur.fetchone()
    return PartialRoom(*row) if row is not None else None


async def partial_rooms(conn: AsyncConnection) -> list[PartialRoom]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM partial_state_rooms WHERE full_at IS NULL ORDER BY since_ts"
    )
    return [PartialRoom(*row) for row in await cur.fetchall()]


async def partial_among(conn: AsyncConnection, room_ids: list[str]) -> set[str]:
    """Those of `room_ids` that still have partial state."""
    if not room_ids:
        return set()
    cur = await conn.execute(
        "SELECT room_id FROM partial_state_rooms WHERE room_id = ANY(%s) AND full_at IS NULL",
        (room_ids,),
    )
    return {row[0] for row in await cur.fetchall()}


async def clear_partial(
    conn: AsyncConnection, room_id: str, join_event_id: str, position: int
) -> None:
    """Mark the state full as of events stream `position`, unless a newer partial join
    replaced the row meanwhile."""
    await conn.execute(
        "UPDATE partial_state_rooms SET full_at = %s"
        " WHERE room_id = %s AND join_event_id = %s AND full_at IS NULL",
        (position, room_id, join_event_id),
    )


async def made_full_between(
    conn: AsyncConnection, room_ids: list[str], since: int, upto: int
) -> set[str]:
    """Those of `room_ids` whose full state came in at a position in (since, upto]."""
    if not room_ids:
        return set()
    cur = await conn.execute(
        "SELECT room_id FROM partial_state_rooms WHERE room_id = ANY(%s)"
        " AND full_at > %s AND full_at <= %s",
        (room_ids, since, upto),
    )
    return {row[0] for row in await cur.fetchall()}


async def events_since(conn: AsyncConnection, room_id: str, after: int) -> list[LaterEvent]:
    """The room's timeline events after stream position `after`, oldest first."""
    cur = await conn.execute(
        "SELECT event_id, stream_ordering, state_group FROM events"
        " WHERE room_id = %s AND stream_ordering > %s AND rejected_reason IS NULL"
        " AND NOT soft_failed ORDER BY stream_ordering",
        (room_id, after),
    )
    return [LaterEvent(*row) for row in await cur.fetchall()]


async def set_state_group(conn: AsyncConnection, event_id: str, group: int) -> None:
    await conn.execute("UPDATE events SET state_group = %s WHERE event_id = %s", (group, event_id))


async def mark_failed(
    conn: AsyncConnection, event_id: str, *, rejected_reason: str | None, soft_failed: bool
) -> None:
    """Take an event out of the timeline: the full state shows it was not allowed."""
    await conn.execute(
        "UPDATE events SET rejected_reason = %s, soft_failed = %s WHERE event_id = %s",
        (rejected_reason, soft_failed, event_id),
    )


async def try_lock(conn: AsyncConnection, room_id: str) -> bool:
    """Take the session-level lock that makes this process the one fetching the room's
    full state; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, room_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, room_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, room_id))
