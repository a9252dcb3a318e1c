"""Relations between events (m.relates_to): children of an event, the aggregations
bundled with events, and a room's threads.

A redacted relation no longer counts: redaction strips the `m.relates_to` its
relation came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline.timeline import Position

_COLUMNS = (
    "e.event_id, e.room_id, r.room_version, e.json, e.stream_ordering, e.state_group,"
    " e.rejected_reason, e.redacted_by"
)


def _valid(alias: str) -> str:
    return (
        f"{alias}.stream_ordering IS NOT NULL AND {alias}.rejected_reason IS NULL"
        f" AND NOT {alias}.soft_failed AND {alias}.redacted_by IS NULL"
    )


async def children(
    conn: AsyncConnection,
    room_id: str,
    parent_id: str,
    *,
    rel_type: str | None,
    event_type: str | None,
    lower: Position | None,
    upper: Position | None,
    forward: bool,
    limit: int,
    max_depth: int = 1,
) -> list[EventRow]:
    """Events relating to `parent_id` (through up to `max_depth` relations), in
    topological order, lower < position <= upper."""
    params: dict[str, Any] = {
        "room_id": room_id,
        "parent": parent_id,
        "max_depth": max_depth,
        "limit": limit,
    }
    where = ""
    if rel_type is not None:
        params["rel_type"] = rel_type
        where += " AND e.rel_type = %(rel_type)s"
    if event_type is not None:
        params["event_type"] = event_type
        where += " AND e.type = %(event_type)s"
    if lower is not None:
        params["lower_depth"], params["lower_stream"] = lower
        where += " AND (e.depth, e.stream_ordering) > (%(lower_depth)s, %(lower_stream)s)"
    if upper is not None:
        params["upper_depth"], params["upper_stream"] = upper
        where += " AND (e.depth, e.stream_ordering) <= (%(upper_depth)s, %(upper_stream)s)"
    order = "ASC" if forward else "DESC"
    cur = await conn.execute(
        f"""
        WITH RECURSIVE related(event_id, level) AS (
            SELECT c.event_id, 1 FROM events c
            WHERE c.relates_to = %(parent)s AND c.room_id = %(room_id)s AND {_valid("c")}
            UNION ALL
            SELECT c.event_id, p.level + 1 FROM related p JOIN events c
                ON c.relates_to = p.event_id
            WHERE p.level < %(max_depth)s AND c.room_id = %(room_id)s AND {_valid("c")}
        )
        SELECT {_COLUMNS} FROM related JOIN events e USING (event_id)
            JOIN rooms r ON r.room_id = e.room_id
        WHERE TRUE{where}
        ORDER BY e.depth {order}, e.stream_ordering {order} LIMIT %(limit)s
        """,
        params,
    )
    return [EventRow(*row) for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    latest_event_id: str
    count: int
    participated: bool


@dataclass(frozen=True, slots=True)
class Edit:
    """An m.replace relation, with what deciding whether it counts needs to know."""

    event_id: str
    room_id: str
    sender: str
    type: str
    is_state: bool
    has_new_content: bool
    origin_server_ts: int


@dataclass(slots=True)
class Aggregations:
    """Per parent event id: its thread, the edits of it (whether one counts depends
    on the original, which the caller holds), the events citing it in order."""

    threads: dict[str, ThreadSummary] = field(default_factory=dict)
    edits: dict[str, list[Edit]] = field(default_factory=dict)
    references: dict[str, list[str]] = field(default_factory=dict)


async def aggregations(
    conn: AsyncConnection, parents: Mapping[str, str], user_id: str
) -> Aggregations:
    """The aggregations of a page of events (`parents`: event id to room id), in one
    round trip of two single-table queries: each is planned in a fraction of the time
    a join of the page's edits to their originals took, for every page a connection
    had not yet prepared.

    A relation counts only from the parent's own room: anyone can name an event id
    from a room of their own, and must not reach the parent's readers that way. The
    room is compared here rather than in SQL, which would plan a scan of the room.
    An edit counts only with `m.new_content` (encrypted edits carry it inside the
    ciphertext), which is read here so that the JSON is parsed only for edits.
    """
    out = Aggregations()
    if not parents:
        return out
    params = {"ids": list(parents), "user": user_id}
    async with conn.pipeline():
        threads = await conn.execute(
            "SELECT e.relates_to, e.room_id,"
            " (array_agg(e.event_id ORDER BY e.depth DESC, e.stream_ordering DESC))[1],"
            " count(*), bool_or(e.sender = %(user)s)"
            " FROM events e WHERE e.relates_to = ANY(%(ids)s)"
            f" AND e.rel_type = 'm.thread' AND {_valid('e')} GROUP BY e.relates_to, e.room_id",
            params,
        )
        others = await conn.execute(
            "SELECT e.rel_type, e.relates_to, e.event_id, e.room_id, e.sender, e.type,"
            " e.state_key IS NOT NULL, e.origin_server_ts, e.depth, e.stream_ordering,"
            " e.rel_type = 'm.replace' AND (e.type = 'm.room.encrypted'"
            "  OR (e.json::json -> 'content' -> 'm.new_content') IS NOT NULL)"
            " FROM events e WHERE e.relates_to = ANY(%(ids)s)"
            f" AND e.rel_type IN ('m.replace', 'm.reference') AND {_valid('e')}",
            params,
        )
    for parent, room_id, latest, count, participated in await threads.fetchall():
        if parents[parent] == room_id:
            out.threads[parent] = ThreadSummary(latest, int(count), bool(participated))
    references: list[tuple[int, int, str, str]] = []
    for row in await others.fetchall():
        rel_type, parent, event_id, room_id, sender, event_type, is_state, ts = row[:8]
        depth, stream, has_new_content = row[8:]
        if parents[parent] != room_id:
            continue
        if rel_type == "m.replace":
            edit = Edit(event_id, room_id, sender, event_type, is_state, has_new_content, ts)
            out.edits.setdefault(parent, []).append(edit)
        else:
            references.append((int(depth), int(stream), parent, event_id))
    for _, _, parent, event_id in sorted(references):
        out.references.setdefault(parent, []).append(event_id)
    return out


async def thread_roots(
    conn: AsyncConnection,
    room_id: str,
    *,
    participant: str | None,
    upper: Position | None,
    limit: int,
) -> list[tuple[str, Position]]:
    """Thread roots of the room with the position of each thread's latest event, most
    recently active first; only threads `participant` took part in, when given."""
    params: dict[str, Any] = {"room_id": room_id, "limit": limit}
    where = ""
    if participant is not None:
        params["user"] = participant
        where += (
            " AND (root.sender = %(user)s OR EXISTS (SELECT 1 FROM events c"
            " WHERE c.relates_to = t.root AND c.rel_type = 'm.thread'"
            f" AND c.sender = %(user)s AND {_valid('c')}))"
        )
    if upper is not None:
        params["upper_depth"], params["upper_stream"] = upper
        where += " AND (t.depth, t.stream_ordering) <= (%(upper_depth)s, %(upper_stream)s)"
    cur = await conn.execute(
        f"""
        SELECT t.root, t.depth, t.stream_ordering FROM (
            SELECT DISTINCT ON (e.relates_to) e.relates_to AS root, e.depth, e.stream_ordering
            FROM events e
            WHERE e.room_id = %(room_id)s AND e.rel_type = 'm.thread' AND {_valid("e")}
            ORDER BY e.relates_to, e.depth DESC, e.stream_ordering DESC
        ) t JOIN events root ON root.event_id = t.root
        WHERE root.room_id = %(room_id)s AND root.stream_ordering IS NOT NULL
            AND root.rejected_reason IS NULL AND NOT root.soft_failed{where}
        ORDER BY t.depth DESC, t.stream_ordering DESC LIMIT %(limit)s
        """,
        params,
    )
    return [(root, Position(int(d), int(s))) for root, d, s in await cur.fetchall()]
