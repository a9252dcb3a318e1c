"""Room summaries (the directory's and the space hierarchy's view of a room) and the
published room list, filtered and ordered by joined members in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

# The state events (state_key "") a summary is made of.
SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
)
# Types whose summary keys survive redaction in every room version.
_KEPT_WHEN_REDACTED = ["m.room.create", "m.room.join_rules", "m.room.history_visibility"]

# Content as jsonb; stored JSON that jsonb refuses (\u0000, lone surrogates) reads as {}.
_CONTENT = (
    "CASE WHEN (e.redacted_by IS NULL OR cs.type = ANY(%(kept)s))"
    r" AND e.json !~ '\\u(0000|[dD][89a-fA-F])'"
    " THEN e.json::jsonb -> 'content' ELSE '{}'::jsonb END"
)

_SUMMARY = f"""
    SELECT r.room_id, r.room_version, r.is_public,
        (SELECT count(*) FROM room_memberships m
            WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined,
        coalesce((SELECT jsonb_object_agg(cs.type, {_CONTENT})
            FROM current_state cs JOIN events e ON e.event_id = cs.event_id
            WHERE cs.room_id = r.room_id AND cs.state_key = '' AND cs.type = ANY(%(types)s)),
            '{{}}'::jsonb) AS state
    FROM rooms r
"""

_MATCHES_TERM = """
    (%(term)s::text IS NULL
     OR strpos(lower(s.state -> 'm.room.name' ->> 'name'), %(term)s) > 0
     OR strpos(lower(s.state -> 'm.room.topic' ->> 'topic'), %(term)s) > 0
     OR strpos(lower(s.state -> 'm.room.canonical_alias' ->> 'alias'), %(term)s) > 0
     OR strpos(lower((s.state -> 'm.room.canonical_alias' -> 'alt_aliases')::text), %(term)s) > 0)
"""
_MATCHES_TYPE = """
    (%(all_types)s
     OR (s.state -> 'm.room.create' ->> 'type') = ANY(%(room_types)s)
     OR (%(untyped)s AND s.state -> 'm.room.create' -> 'type' IS NULL))
"""


@dataclass(frozen=True, slots=True)
class RoomSummaryRow:
    room_id: str
    room_version: str
    is_public: bool
    joined_members: int
    # type -> content of the summary's state events
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DirectoryFilter:
    """`search_term` lower-cased; `room_types` None for every type, else the types
    wanted, with `untyped` for rooms without one."""

    search_term: str | None = None
    room_types: tuple[str, ...] | None = None
    untyped: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "term": self.search_term,
            "all_types": self.room_types is None,
            "room_types": list(self.room_types or ()),
            "untyped": self.untyped,
        }


def _base_params() -> dict[str, Any]:
    return {"types": list(SUMMARY_TYPES), "kept": _KEPT_WHEN_REDACTED}


def _row(row: Sequence[Any]) -> RoomSummaryRow:
    state = row[4] if isinstance(row[4], dict) else {}
    return RoomSummaryRow(row[0], row[1], bool(row[2]), int(row[3]), state)


async def summaries(conn: AsyncConnection, room_ids: Sequence[str]) -> dict[str, RoomSummaryRow]:
    """Summaries of the given rooms that we know."""
    if not room_ids:
        return {}
    cur = await conn.execute(
        _SUMMARY + " WHERE r.room_id = ANY(%(rooms)s)",
        {**_base_params(), "rooms": list(room_ids)},
    )
    return {row[0]: _row(row) for row in await cur.fetchall()}


async def published_rooms(
    conn: AsyncConnection,
    directory_filter: DirectoryFilter,
    limit: int,
    *,
    after: tuple[int, str] | None = None,
    before: tuple[int, str] | None = None,
) -> list[RoomSummaryRow]:
    """Published rooms ordered by joined members (desc) then room id, from just after
    `after` or (the last `limit` ones) just before `before` in that order."""
    params = {**_base_params(), **directory_filter.params(), "limit": limit}
    where = [_MATCHES_TERM, _MATCHES_TYPE]
    order = "s.joined DESC, s.room_id"
    if after is not None:
        where.append("(s.joined < %(j)s OR (s.joined = %(j)s AND s.room_id > %(r)s))")
        params.update(j=after[0], r=after[1])
    elif before is not None:
        where.append("(s.joined > %(j)s OR (s.joined = %(j)s AND s.room_id < %(r)s))")
        params.update(j=before[0], r=before[1])
        order = "s.joined, s.room_id DESC"
    cur = await conn.execute(
        f"SELECT * FROM ({_SUMMARY} WHERE r.is_public) s WHERE {' AND '.join(where)}"
        f" ORDER BY {order} LIMIT %(limit)s",
        params,
    )
    rows = [_row(row) for row in await cur.fetchall()]
    return rows[::-1] if before is not None else rows


async def count_published(conn: AsyncConnection, directory_filter: DirectoryFilter) -> int:
    cur = await conn.execute(
        f"SELECT count(*) FROM ({_SUMMARY} WHERE r.is_public) s"
        f" WHERE {_MATCHES_TERM} AND {_MATCHES_TYPE}",
        {**_base_params(), **directory_filter.params()},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
