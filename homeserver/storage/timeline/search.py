"""Full-text search over events' `search_vector` (see migration 0003), and the events
around a result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to look for and where. `tsquery` is a to_tsquery('simple') expression the
    caller built from plain words; `rooms` maps each room searched to the last stream
    position to search there (None: up to now); `senders` None means any sender."""

    tsquery: str
    rooms: Mapping[str, int | None]
    types: Sequence[str]
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()
    contains_url: bool | None = None

    def params(self) -> dict[str, Any]:
        return {
            "query": self.tsquery,
            "rooms": list(self.rooms),
            "uppers": list(self.rooms.values()),
            "types": list(self.types),
            "senders": None if self.senders is None else list(self.senders),
            "not_senders": list(self.not_senders),
            "contains_url": self.contains_url,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: str
    room_id: str
    stream_ordering: int
    rank: float


_MATCHING = """
    FROM events e
    JOIN unnest(%(rooms)s::text[], %(uppers)s::bigint[]) AS searched(room_id, upper)
        ON searched.room_id = e.room_id
    CROSS JOIN to_tsquery('simple', %(query)s) q
    WHERE e.search_vector IS NOT NULL AND e.search_vector @@ q
      AND (searched.upper IS NULL OR e.stream_ordering <= searched.upper)
      AND e.type = ANY(%(types)s)
      AND e.stream_ordering IS NOT NULL AND e.redacted_by IS NULL
      AND e.rejected_reason IS NULL AND NOT e.soft_failed
      AND (%(senders)s::text[] IS NULL OR e.sender = ANY(%(senders)s::text[]))
      AND NOT (e.sender = ANY(%(not_senders)s::text[]))
      AND (%(contains_url)s::boolean IS NULL OR e.contains_url = %(contains_url)s::boolean)
"""


async def search_by_rank(
    conn: AsyncConnection, query: SearchQuery, limit: int, offset: int
) -> list[SearchHit]:
    cur = await conn.execute(
        "SELECT e.event_id, e.room_id, e.stream_ordering, ts_rank(e.search_vector, q)"
        + _MATCHING
        + " ORDER BY 4 DESC, e.stream_ordering DESC LIMIT %(limit)s OFFSET %(offset)s",
        {**query.params(), "limit": limit, "offset": offset},
    )
    return [SearchHit(r[0], r[1], int(r[2]), float(r[3])) for r in await cur.fetchall()]


async def search_by_recent(
    conn: AsyncConnection, query: SearchQuery, limit: int, before: int | None
) -> list[SearchHit]:
    """Newest first, from just before stream position `before`."""
    cur = await conn.execute(
        "SELECT e.event_id, e.room_id, e.stream_ordering, ts_rank(e.search_vector, q)"
        + _MATCHING
        + " AND (%(before)s::bigint IS NULL OR e.stream_ordering < %(before)s::bigint)"
        " ORDER BY e.stream_ordering DESC LIMIT %(limit)s",
        {**query.params(), "limit": limit, "before": before},
    )
    return [SearchHit(r[0], r[1], int(r[2]), float(r[3])) for r in await cur.fetchall()]


async def matching_ids(conn: AsyncConnection, query: SearchQuery, limit: int) -> list[str]:
    """Ids of up to `limit` matches, newest first."""
    cur = await conn.execute(
        "SELECT e.event_id" + _MATCHING + " ORDER BY e.stream_ordering DESC LIMIT %(limit)s",
        {**query.params(), "limit": limit},
    )
    return [row[0] for row in await cur.fetchall()]


async def events_around(
    conn: AsyncConnection, room_id: str, stream_ordering: int, before: int, after: int
) -> tuple[list[str], list[str]]:
    """Ids of up to `before` timeline events just before the position
    (newest first) and up to `after` just after it (oldest first)."""
    timeline = (
        "SELECT event_id FROM events WHERE room_id = %s"
        " AND stream_ordering IS NOT NULL AND rejected_reason IS NULL AND NOT soft_failed"
    )
    cur = await conn.execute(
        timeline + " AND stream_ordering < %s ORDER BY stream_ordering DESC LIMIT %s",
        (room_id, stream_ordering, before),
    )
    earlier = [r[0] for r in await cur.fetchall()]
    cur = await conn.execute(
        timeline + " AND stream_ordering > %s ORDER BY stream_ordering LIMIT %s",
        (room_id, stream_ordering, after),
    )
    later = [r[0] for r in await cur.fetchall()]
    return earlier, later


async def state_groups_of(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, int]:
    """The state group (state after the event) of each event that has one."""
    cur = await conn.execute(
        "SELECT event_id, state_group FROM events"
        " WHERE event_id = ANY(%s) AND state_group IS NOT NULL",
        (list(event_ids),),
    )
    return {r[0]: int(r[1]) for r in await cur.fetchall()}
