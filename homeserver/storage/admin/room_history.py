"""A room's history as admins read it, whoever may see it: pages by stream position,
the event nearest a time, and counts of a user's invites and joins."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection

from homeserver.storage.rooms.events import EventRow, get_events

# Events whose JSON PostgreSQL's jsonb cannot hold (NUL, lone surrogates) are skipped.
_JSONB_SAFE = "e.json !~ '\\\\u(0000|[dD][89a-fA-F])'"


async def page(
    conn: AsyncConnection, room_id: str, after: int | None, *, forward: bool, limit: int
) -> list[tuple[str, int]]:
    """(event id, stream position) of up to `limit` events past `after`, in order."""
    if forward:
        cur = await conn.execute(
            "SELECT event_id, stream_ordering FROM events WHERE room_id = %s"
            " AND stream_ordering > COALESCE(%s, -1) AND rejected_reason IS NULL"
            " ORDER BY stream_ordering LIMIT %s",
            (room_id, after, limit),
        )
    else:
        cur = await conn.execute(
            "SELECT event_id, stream_ordering FROM events WHERE room_id = %s"
            " AND stream_ordering < COALESCE(%s, 9223372036854775807)"
            " AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT %s",
            (room_id, after, limit),
        )
    return [(row[0], int(row[1])) for row in await cur.fetchall()]


async def position_of(conn: AsyncConnection, room_id: str, event_id: str) -> int | None:
    cur = await conn.execute(
        "SELECT stream_ordering FROM events WHERE event_id = %s AND room_id = %s",
        (event_id, room_id),
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def nearest(
    conn: AsyncConnection, room_id: str, ts: int, *, forward: bool
) -> tuple[str, int] | None:
    order, compare = ("ASC", ">=") if forward else ("DESC", "<=")
    cur = await conn.execute(
        "SELECT event_id, origin_server_ts FROM events WHERE room_id = %s"
        f" AND origin_server_ts {compare} %s AND stream_ordering IS NOT NULL"
        f" AND rejected_reason IS NULL ORDER BY origin_server_ts {order}, stream_ordering {order}"
        " LIMIT 1",
        (room_id, ts),
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], int(row[1]))


async def rows(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, EventRow]:
    return await get_events(conn, event_ids)


async def count_memberships(
    conn: AsyncConnection, user_id: str, membership: str, from_ts: int, *, as_sender: bool
) -> int:
    """Member events since `from_ts`: sent by the user about others (`as_sender`: their
    invites), or about the user (their joins, counted once per room)."""
    who = "e.sender = %s AND e.state_key <> e.sender" if as_sender else "e.state_key = %s"
    counted = "count(*)" if as_sender else "count(DISTINCT e.room_id)"
    cur = await conn.execute(
        f"SELECT {counted} FROM events e WHERE e.type = 'm.room.member' AND {who}"
        f" AND e.origin_server_ts >= %s AND {_JSONB_SAFE}"
        " AND e.json::jsonb -> 'content' ->> 'membership' = %s",
        (user_id, from_ts, membership),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def events_to_redact(
    conn: AsyncConnection, user_id: str, room_ids: Sequence[str], limit: int
) -> list[tuple[str, str]]:
    """(room id, event id) of the user's messages not yet redacted, newest first."""
    cur = await conn.execute(
        "SELECT room_id, event_id FROM events WHERE sender = %s AND room_id = ANY(%s)"
        " AND state_key IS NULL AND type <> 'm.room.redaction' AND redacted_by IS NULL"
        " AND rejected_reason IS NULL AND stream_ordering IS NOT NULL"
        " ORDER BY stream_ordering DESC LIMIT %s",
        (user_id, list(room_ids), limit),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]
