"""Presence of local users: state, status message and activity times, on the presence
stream. Only state and status changes take a stream position; activity times are
touched in place and read as "ago" values at read time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection

from homeserver.storage.rooms.memberships import share_a_joined_room


@dataclass(frozen=True, slots=True)
class PresenceRow:
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    last_seen_ts: int
    stream_id: int


_COLUMNS = "user_id, state, status_msg, last_active_ts, last_seen_ts, stream_id"


async def get_presence(conn: AsyncConnection, user_id: str) -> PresenceRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM presence WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return PresenceRow(*row) if row else None


async def upsert_presence(conn: AsyncConnection, row: PresenceRow) -> None:
    await conn.execute(
        f"INSERT INTO presence ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state,"
        " status_msg = EXCLUDED.status_msg, last_active_ts = EXCLUDED.last_active_ts,"
        " last_seen_ts = EXCLUDED.last_seen_ts, stream_id = EXCLUDED.stream_id",
        (
            row.user_id,
            row.state,
            row.status_msg,
            row.last_active_ts,
            row.last_seen_ts,
            row.stream_id,
        ),
    )


async def touch(
    conn: AsyncConnection, user_id: str, last_seen_ts: int, last_active_ts: int | None
) -> None:
    """Record a sign of life (and activity, when given) without a new stream position."""
    await conn.execute(
        "UPDATE presence SET last_seen_ts = GREATEST(last_seen_ts, %s),"
        " last_active_ts = GREATEST(last_active_ts, COALESCE(%s, last_active_ts))"
        " WHERE user_id = %s",
        (last_seen_ts, last_active_ts, user_id),
    )


async def stale(
    conn: AsyncConnection, idle_before: int, offline_before: int, limit: int
) -> list[PresenceRow]:
    """Users to move down: online but idle, or not offline but not seen for long."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM presence WHERE state <> 'offline' AND"
        " (last_seen_ts < %s OR (state = 'online' AND last_active_ts < %s))"
        " ORDER BY user_id LIMIT %s",
        (offline_before, idle_before, limit),
    )
    return [PresenceRow(*row) for row in await cur.fetchall()]


async def transition(conn: AsyncConnection, old: PresenceRow, state: str, stream_id: int) -> bool:
    """Change the state unless the row changed since `old` was read (another process
    or a request got there first); True if changed."""
    cur = await conn.execute(
        "UPDATE presence SET state = %s, stream_id = %s WHERE user_id = %s AND stream_id = %s"
        " AND last_seen_ts = %s AND last_active_ts = %s",
        (state, stream_id, old.user_id, old.stream_id, old.last_seen_ts, old.last_active_ts),
    )
    return cur.rowcount == 1


async def visible_changes(
    conn: AsyncConnection, viewer: str, after: int, up_to: int, *, include_offline: bool
) -> list[PresenceRow]:
    """Presence at positions in (after, up_to] of the viewer and of users who share a
    joined room with the viewer."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM presence p WHERE p.stream_id > %s AND p.stream_id <= %s"
        " AND (%s OR p.state <> 'offline')"
        f" AND (p.user_id = %s OR {share_a_joined_room('%s', 'p.user_id')})"
        " ORDER BY p.stream_id",
        (after, up_to, include_offline, viewer, viewer),
    )
    return [PresenceRow(*row) for row in await cur.fetchall()]


async def current_of(
    conn: AsyncConnection, user_ids: Sequence[str], up_to: int
) -> list[PresenceRow]:
    """The presence, other than offline, of these users as of position `up_to` (those
    whose presence changed since are left out: that change is still to be read)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM presence WHERE user_id = ANY(%s) AND stream_id <= %s"
        " AND state <> 'offline' ORDER BY stream_id",
        (list(user_ids), up_to),
    )
    return [PresenceRow(*row) for row in await cur.fetchall()]


async def share_a_room(conn: AsyncConnection, user_a: str, user_b: str) -> bool:
    cur = await conn.execute(f"SELECT {share_a_joined_room('%s', '%s')}", (user_a, user_b))
    row = await cur.fetchone()
    return bool(row and row[0])
