"""The batched reads behind /sync: one statement per concern for all of a user's rooms.

Per-room loops would make an initial sync of hundreds of rooms cost hundreds of
round trips; each function here takes every room at once (LATERAL joins over
`unnest`ed arrays) so a sync costs a handful of queries whatever its size.
Only timeline events count: not outliers, not rejected or soft-failed events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from homeserver.storage.rooms.events import EventRow
from homeserver.storage.rooms.state import StateMap
from homeserver.storage.timeline.timeline import SqlFilter, filter_sql

_IN_TIMELINE = "e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL AND NOT e.soft_failed"


@dataclass(frozen=True, slots=True)
class ChangedRoom:
    """A room of the user with timeline events in a stream range."""

    room_id: str
    latest: int  # the last stream position in the range
    member_changed: bool  # the user's own membership changed within the range
    membership: str  # current membership
    membership_event_id: str
    membership_stream: int


async def changed_rooms(
    conn: AsyncConnection, user_id: str, since: int, upto: int
) -> list[ChangedRoom]:
    """Rooms the user has (or had) a membership of with events in (since, upto].

    Walks the events of the range by stream position and looks each room's
    membership up by key: the cost follows what happened, not how many rooms the
    user is in. A room forgotten since is included: a leave within the range must
    still reach the client (another device may not have seen it).
    """
    cur = await conn.execute(
        "SELECT e.room_id, max(e.stream_ordering),"
        " bool_or(e.type = 'm.room.member' AND e.state_key = %(user)s),"
        " m.membership, m.event_id, m.stream_ordering"
        " FROM events e JOIN room_memberships m"
        " ON m.room_id = e.room_id AND m.user_id = %(user)s"
        f" WHERE e.stream_ordering > %(since)s AND e.stream_ordering <= %(upto)s AND {_IN_TIMELINE}"
        " GROUP BY e.room_id, m.membership, m.event_id, m.stream_ordering",
        {"user": user_id, "since": since, "upto": upto},
    )
    return [
        ChangedRoom(room, int(latest), bool(changed), membership, event_id, int(stream))
        for room, latest, changed, membership, event_id, stream in await cur.fetchall()
    ]


async def newly_joined_members(
    conn: AsyncConnection, fresh_rooms: Sequence[str], rooms: Sequence[str], since: int, upto: int
) -> set[str]:
    """Everyone joined to `fresh_rooms` (rooms the user has just joined), and whoever
    joined one of `rooms` by a membership event in (since, upto] and is still in."""
    cur = await conn.execute(
        "SELECT m.user_id FROM room_memberships m"
        " WHERE m.room_id = ANY(%(fresh)b::text[]) AND m.membership = 'join'"
        " UNION SELECT m.user_id FROM events e JOIN room_memberships m"
        " ON m.room_id = e.room_id AND m.user_id = e.state_key AND m.event_id = e.event_id"
        " WHERE e.stream_ordering > %(since)s AND e.stream_ordering <= %(upto)s"
        f" AND {_IN_TIMELINE} AND e.type = 'm.room.member'"
        " AND e.room_id = ANY(%(rooms)b::text[]) AND m.membership = 'join'",
        {"fresh": list(fresh_rooms), "rooms": list(rooms), "since": since, "upto": upto},
    )
    return {user_id for (user_id,) in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class MembershipAt:
    membership: str
    event_id: str
    stream_ordering: int


async def memberships_at(
    conn: AsyncConnection, user_id: str, points: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], MembershipAt]:
    """The user's membership of each room as of each stream position (absent: none)."""
    if not points:
        return {}
    cur = await conn.execute(
        "SELECT p.room_id, p.upto, x.membership, x.event_id, x.stream_ordering"
        " FROM unnest(%(rooms)b::text[], %(uptos)b::bigint[]) AS p(room_id, upto)"
        " CROSS JOIN LATERAL (SELECT e.json::jsonb #>> '{content,membership}' AS membership,"
        " e.event_id, e.stream_ordering FROM events e"
        " WHERE e.room_id = p.room_id AND e.type = 'm.room.member' AND e.state_key = %(user)s"
        f" AND e.stream_ordering <= p.upto AND {_IN_TIMELINE}"
        " ORDER BY e.stream_ordering DESC LIMIT 1) x",
        {"rooms": [p[0] for p in points], "uptos": [p[1] for p in points], "user": user_id},
    )
    return {
        (room, int(upto)): MembershipAt(membership, event_id, int(stream))
        for room, upto, membership, event_id, stream in await cur.fetchall()
    }


async def recent_events(
    conn: AsyncConnection,
    windows: Sequence[tuple[str, int, int]],
    limit: int,
    event_types: SqlFilter | None = None,
) -> dict[str, list[EventRow]]:
    """Per (room, lower, upper) window, its last `limit` events with lower < stream
    position <= upper, newest first."""
    if not windows:
        return {}
    cur = await conn.execute(*recent_events_query(windows, limit, event_types))
    return recent_events_found(await cur.fetchall())


def recent_events_query(
    windows: Sequence[tuple[str, int, int]], limit: int, event_types: SqlFilter | None = None
) -> tuple[str, dict[str, Any]]:
    """The statement of `recent_events`, for a caller that pipelines it with others."""
    params: dict[str, Any] = {
        "rooms": [w[0] for w in windows],
        "lowers": [w[1] for w in windows],
        "uppers": [w[2] for w in windows],
        "limit": limit,
    }
    return (
        "SELECT x.event_id, w.room_id, r.room_version, x.json, x.stream_ordering,"
        " x.state_group, x.rejected_reason, x.redacted_by"
        " FROM unnest(%(rooms)b::text[], %(lowers)b::bigint[], %(uppers)b::bigint[])"
        " AS w(room_id, lower, upper) JOIN rooms r ON r.room_id = w.room_id"
        " CROSS JOIN LATERAL (SELECT e.event_id, e.json, e.stream_ordering, e.state_group,"
        " e.rejected_reason, e.redacted_by FROM events e WHERE e.room_id = w.room_id"
        " AND e.stream_ordering > w.lower AND e.stream_ordering <= w.upper"
        f" AND {_IN_TIMELINE}{filter_sql(event_types, params)}"
        " ORDER BY e.stream_ordering DESC LIMIT %(limit)s) x"
        " ORDER BY w.room_id, x.stream_ordering DESC",
        params,
    )


def recent_events_found(rows: Iterable[Any]) -> dict[str, list[EventRow]]:
    """The rows of `recent_events_query` by room."""
    out: dict[str, list[EventRow]] = {}
    for row in rows:
        out.setdefault(row[1], []).append(EventRow(*row))
    return out


async def state_groups_before(
    conn: AsyncConnection, points: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Per (room, stream position), the state after the room's last event before that
    position: the state at that point of the timeline. Absent before the room began."""
    point_list = sorted(set(points))
    if not point_list:
        return {}
    cur = await conn.execute(
        "SELECT p.room_id, p.pos, x.state_group"
        " FROM unnest(%b::text[], %b::bigint[]) AS p(room_id, pos)"
        " CROSS JOIN LATERAL (SELECT e.state_group FROM events e WHERE e.room_id = p.room_id"
        f" AND e.stream_ordering < p.pos AND {_IN_TIMELINE} AND e.state_group IS NOT NULL"
        " ORDER BY e.stream_ordering DESC LIMIT 1) x",
        ([p[0] for p in point_list], [p[1] for p in point_list]),
    )
    return {(room, int(pos)): int(group) for room, pos, group in await cur.fetchall()}


async def full_states(conn: AsyncConnection, groups: Iterable[int]) -> dict[int, StateMap]:
    """The whole state of each group, walking all their delta chains in one query."""
    group_list = sorted(set(groups))
    if not group_list:
        return {}
    cur = await conn.execute(
        """
        WITH RECURSIVE chain(start, id, prev_group, n) AS (
            SELECT id, id, prev_group, 0 FROM state_groups WHERE id = ANY(%b::bigint[])
            UNION ALL
            SELECT c.start, g.id, g.prev_group, c.n + 1
            FROM state_groups g JOIN chain c ON g.id = c.prev_group
        )
        SELECT DISTINCT ON (c.start, e.type, e.state_key) c.start, e.type, e.state_key,
            e.event_id
        FROM chain c JOIN state_group_entries e ON e.state_group = c.id
        ORDER BY c.start, e.type, e.state_key, c.n
        """,
        (group_list,),
    )
    out: dict[int, StateMap] = {group: {} for group in group_list}
    for start, event_type, state_key, event_id in await cur.fetchall():
        out[int(start)][(event_type, state_key)] = event_id
    return out


@dataclass(frozen=True, slots=True)
class RoomSummary:
    joined: int
    invited: int
    heroes: list[str]


async def room_summaries(
    conn: AsyncConnection, room_ids: Sequence[str], user_id: str, heroes: int = 5
) -> dict[str, RoomSummary]:
    """Member counts and heroes: the first joined or invited members by stream order
    other than the user, or else the first who left or were banned."""
    if not room_ids:
        return {}
    cur = await conn.execute(*room_summaries_query(room_ids, user_id, heroes))
    return room_summaries_found(await cur.fetchall())


def room_summaries_query(
    room_ids: Sequence[str], user_id: str, heroes: int = 5
) -> tuple[str, dict[str, Any]]:
    """The statement of `room_summaries`, for a caller that pipelines it with others."""
    return (
        "SELECT room_id, count(*) FILTER (WHERE membership = 'join'),"
        " count(*) FILTER (WHERE membership = 'invite'),"
        " (array_agg(user_id ORDER BY stream_ordering)"
        "  FILTER (WHERE membership IN ('join', 'invite') AND user_id <> %(user)s))[1:%(n)s],"
        " (array_agg(user_id ORDER BY stream_ordering)"
        "  FILTER (WHERE membership IN ('leave', 'ban') AND user_id <> %(user)s))[1:%(n)s]"
        " FROM room_memberships WHERE room_id = ANY(%(rooms)b::text[]) GROUP BY room_id",
        {"rooms": list(room_ids), "user": user_id, "n": heroes},
    )


def room_summaries_found(rows: Iterable[Any]) -> dict[str, RoomSummary]:
    """The rows of `room_summaries_query` by room."""
    return {
        room: RoomSummary(int(joined), int(invited), list(present or gone or []))
        for room, joined, invited, present, gone in rows
    }


async def redactions_of(conn: AsyncConnection, event_ids: Iterable[str]) -> dict[str, str]:
    """The redaction of each of these events that has been redacted."""
    cur = await conn.execute(
        "SELECT event_id, redacted_by FROM events"
        " WHERE event_id = ANY(%b::text[]) AND redacted_by IS NOT NULL",
        (list(event_ids),),
    )
    return {event_id: redacted_by for event_id, redacted_by in await cur.fetchall()}


async def stream_counters(conn: AsyncConnection) -> dict[str, int]:
    """The last position handed out on each stream, committed or not: a token beyond
    this was never issued by any process."""
    cur = await conn.execute("SELECT stream, position FROM stream_positions")
    return {stream: int(position) for stream, position in await cur.fetchall()}
