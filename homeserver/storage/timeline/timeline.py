"""Reading a room's timeline in topological order: pages of events, positions, and the
membership facts history visibility needs.

A position is (depth, stream_ordering): depth orders the DAG, and the stream
ordering breaks ties between events at equal depth so that every event has a
distinct place. Only events in the timeline count: not outliers (no stream
position), not rejected or soft-failed events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from psycopg import AsyncConnection

from homeserver.storage.rooms.events import EventRow

_COLUMNS = (
    "e.event_id, e.room_id, r.room_version, e.json, e.stream_ordering, e.state_group,"
    " e.rejected_reason, e.redacted_by"
)
_IN_TIMELINE = "e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL AND NOT e.soft_failed"
# Timeline events of the room whose missing prev events are due to be backfilled.
_DUE_GAPS = (
    "SELECT g.event_id FROM backfill_gaps g"
    " WHERE g.room_id = %(room_id)s AND g.retry_after <= now()"
)


class Position(NamedTuple):
    """An event's place in the room's topological order; compares lexicographically."""

    depth: int
    stream: int


@dataclass(frozen=True, slots=True)
class SqlFilter:
    """What a RoomEventFilter lets SQL drop early; `*` in types is a wildcard.

    None means "no constraint". The caller still applies the full filter afterwards,
    so this only has to keep every event the filter would keep.
    """

    types: Sequence[str] | None = None
    not_types: Sequence[str] = ()
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def filter_sql(sql_filter: SqlFilter | None, params: dict[str, Any]) -> str:
    """SQL conditions on `e.` (an events alias) for what `sql_filter` lets drop."""
    if sql_filter is None:
        return ""
    clauses = []
    if sql_filter.types is not None:
        params["types"] = [_like(t) for t in sql_filter.types]
        clauses.append("e.type LIKE ANY(%(types)s)")
    if sql_filter.not_types:
        params["not_types"] = [_like(t) for t in sql_filter.not_types]
        clauses.append("NOT (e.type LIKE ANY(%(not_types)s))")
    if sql_filter.senders is not None:
        params["senders"] = list(sql_filter.senders)
        clauses.append("e.sender = ANY(%(senders)s)")
    if sql_filter.not_senders:
        params["not_senders"] = list(sql_filter.not_senders)
        clauses.append("NOT (e.sender = ANY(%(not_senders)s))")
    return "".join(f" AND {c}" for c in clauses)


async def paginate(
    conn: AsyncConnection,
    room_id: str,
    *,
    reader: tuple[str, str] | None = None,
    lower: Position | None,
    upper: Position | None,
    forward: bool,
    limit: int,
    sql_filter: SqlFilter | None = None,
    gaps: set[str] | None = None,
) -> tuple[list[EventRow], dict[str, str]]:
    """Events with lower < position <= upper, oldest first when `forward`, else newest
    first (a None bound is open); and the transaction ids that `reader` (user id,
    device id) sent any of them with, which clients get back in `unsigned`.

    With a `gaps` set, the ids of the returned events that begin a hole in the timeline
    due to be backfilled are added to it, in the same query (the room's few gaps are
    read once, as an array: an InitPlan, not a probe per row), and such events are
    returned even when `sql_filter` drops them."""
    params: dict[str, Any] = {"room_id": room_id, "limit": limit}
    where = ""
    if lower is not None:
        params["lower_depth"], params["lower_stream"] = lower
        where += " AND (e.depth, e.stream_ordering) > (%(lower_depth)s, %(lower_stream)s)"
    if upper is not None:
        params["upper_depth"], params["upper_stream"] = upper
        where += " AND (e.depth, e.stream_ordering) <= (%(upper_depth)s, %(upper_stream)s)"
    txn = "NULL, NULL, NULL"
    join = ""
    if reader is not None:
        # Joined on the event alone, so that the only index that can serve it is the
        # one by event: the key's (user, device) prefix would read every send the
        # device ever made, for each event of the page.
        txn = "t.user_id, t.device_id, t.txn_id"
        join = " LEFT JOIN event_txn_ids t ON t.event_id = e.event_id"
    order = "ASC" if forward else "DESC"
    filtered = filter_sql(sql_filter, params)
    gap = "FALSE"
    if gaps is not None:
        gap = f"e.event_id = ANY(ARRAY({_DUE_GAPS}))"
        if filtered:
            filtered = f" AND (TRUE{filtered} OR {gap})"
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, {txn}, {gap} FROM events e"
        " CROSS JOIN (SELECT room_version FROM rooms WHERE room_id = %(room_id)s) r"
        f"{join}"
        f" WHERE e.room_id = %(room_id)s AND {_IN_TIMELINE}{where}{filtered}"
        f" ORDER BY e.depth {order}, e.stream_ordering {order} LIMIT %(limit)s",
        params,
    )
    rows: list[EventRow] = []
    txn_ids: dict[str, str] = {}
    for *columns, txn_user, txn_device, txn_id, at_gap in await cur.fetchall():
        row = EventRow(*columns)
        rows.append(row)
        if reader is not None and (txn_user, txn_device) == reader:
            txn_ids[row.event_id] = txn_id
        if at_gap and gaps is not None:
            gaps.add(row.event_id)
    return rows, txn_ids


async def positions_of(conn: AsyncConnection, event_ids: Iterable[str]) -> dict[str, Position]:
    """Positions of the given events that are in a timeline."""
    cur = await conn.execute(
        f"SELECT e.event_id, e.depth, e.stream_ordering FROM events e"
        f" WHERE e.event_id = ANY(%s) AND {_IN_TIMELINE}",
        (list(event_ids),),
    )
    return {eid: Position(int(d), int(s)) for eid, d, s in await cur.fetchall()}


async def latest_position(conn: AsyncConnection, room_id: str) -> Position | None:
    """The position of the room's most recent timeline event."""
    cur = await conn.execute(
        f"SELECT e.depth, e.stream_ordering FROM events e WHERE e.room_id = %s"
        f" AND {_IN_TIMELINE} ORDER BY e.depth DESC, e.stream_ordering DESC LIMIT 1",
        (room_id,),
    )
    row = await cur.fetchone()
    return Position(int(row[0]), int(row[1])) if row else None


async def position_at_stream(
    conn: AsyncConnection, room_id: str, stream_ordering: int
) -> Position | None:
    """The position of the room's last event at or before a stream position (what a sync
    token names), or None when the room had no events yet."""
    cur = await conn.execute(
        f"SELECT e.depth, e.stream_ordering FROM events e WHERE e.room_id = %s"
        f" AND e.stream_ordering <= %s AND {_IN_TIMELINE}"
        " ORDER BY e.stream_ordering DESC LIMIT 1",
        (room_id, stream_ordering),
    )
    row = await cur.fetchone()
    return Position(int(row[0]), int(row[1])) if row else None


async def state_group_at(conn: AsyncConnection, room_id: str, position: Position) -> int | None:
    """The state after the last event at or before `position`."""
    cur = await conn.execute(
        f"SELECT e.state_group FROM events e WHERE e.room_id = %s AND {_IN_TIMELINE}"
        " AND e.state_group IS NOT NULL AND (e.depth, e.stream_ordering) <= (%s, %s)"
        " ORDER BY e.depth DESC, e.stream_ordering DESC LIMIT 1",
        (room_id, position.depth, position.stream),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def first_event_after(
    conn: AsyncConnection, room_id: str, position: Position
) -> tuple[str, int] | None:
    """The room's first timeline event after `position`, and the state after it."""
    cur = await conn.execute(
        f"SELECT e.event_id, e.state_group FROM events e WHERE e.room_id = %s AND {_IN_TIMELINE}"
        " AND e.state_group IS NOT NULL AND (e.depth, e.stream_ordering) > (%s, %s)"
        " ORDER BY e.depth, e.stream_ordering LIMIT 1",
        (room_id, position.depth, position.stream),
    )
    row = await cur.fetchone()
    return (str(row[0]), int(row[1])) if row else None


@dataclass(frozen=True, slots=True)
class MembershipAt:
    """A user's current membership of a room and where its event sits."""

    membership: str
    forgotten: bool
    event_id: str
    position: Position | None
    state_group: int | None


async def room_and_membership(
    conn: AsyncConnection, room_id: str, user_id: str
) -> tuple[int | None, MembershipAt | None] | None:
    """The room's current state group and the user's membership in one round trip;
    None when the room is unknown."""
    cur = await conn.execute(
        "SELECT r.current_state_group, m.membership, m.forgotten, m.event_id, e.depth,"
        " e.stream_ordering, e.state_group FROM rooms r"
        " LEFT JOIN room_memberships m ON m.room_id = r.room_id AND m.user_id = %s"
        " LEFT JOIN events e ON e.event_id = m.event_id"
        " WHERE r.room_id = %s",
        (user_id, room_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    current_group, membership, forgotten, event_id, depth, stream, group = row
    if membership is None:
        return current_group, None
    position = Position(int(depth), int(stream)) if stream is not None else None
    return current_group, MembershipAt(membership, forgotten, event_id, position, group)


async def latest_joins(
    conn: AsyncConnection, user_id: str, room_ids: Iterable[str]
) -> dict[str, Position]:
    """Per room, the position of the user's most recent join event."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (e.room_id) e.room_id, e.depth, e.stream_ordering FROM events e"
        " WHERE e.room_id = ANY(%s) AND e.type = 'm.room.member' AND e.state_key = %s"
        f" AND {_IN_TIMELINE} AND (e.json::jsonb #>> '{{content,membership}}') = 'join'"
        " ORDER BY e.room_id, e.depth DESC, e.stream_ordering DESC",
        (list(set(room_ids)), user_id),
    )
    return {room: Position(int(d), int(s)) for room, d, s in await cur.fetchall()}


async def events_near_timestamp(
    conn: AsyncConnection,
    room_id: str,
    ts: int,
    *,
    forward: bool,
    upper: Position | None,
    limit: int,
) -> list[EventRow]:
    """Candidates for timestamp_to_event: events at or after `ts` (earliest first) when
    `forward`, else at or before it (latest first)."""
    params: dict[str, Any] = {"room_id": room_id, "ts": ts, "limit": limit}
    where = " AND e.origin_server_ts >= %(ts)s" if forward else " AND e.origin_server_ts <= %(ts)s"
    if upper is not None:
        params["upper_depth"], params["upper_stream"] = upper
        where += " AND (e.depth, e.stream_ordering) <= (%(upper_depth)s, %(upper_stream)s)"
    order = "ASC" if forward else "DESC"
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
        f" WHERE e.room_id = %(room_id)s AND {_IN_TIMELINE}{where}"
        f" ORDER BY e.origin_server_ts {order}, e.depth {order}, e.stream_ordering {order}"
        " LIMIT %(limit)s",
        params,
    )
    return [EventRow(*row) for row in await cur.fetchall()]
