"""Push actions stored once per room (`event_push_room_actions`), the spans of local
members' joins that say whom such a row notifies (`push_member_spans`), and the SQL
that reads a user's actions as one set: their own rows and the room rows they are in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class RoomAction:
    """An event that notifies, plainly, every local member of its room joined at its
    position but those `excluded`."""

    stream_ordering: int
    thread_id: str | None  # None: the main timeline
    excluded: Sequence[str]


@dataclass(frozen=True, slots=True)
class SpanChange:
    """A local user starting (`joined`) or stopping being joined at a stream position."""

    user_id: str
    joined: bool
    stream_ordering: int


def user_actions(where: str = "TRUE", *, user: str = "%(user)s") -> str:
    """A FROM item: the push actions of `user` (an SQL expression), columns user_id,
    room_id, stream_ordering, thread_id, actions (NULL: plain notify) and highlight.

    `where` filters both halves alike, before they are joined (so that each reads only
    its range through its index); it names the action's columns as `{t}.room_id`,
    `{t}.stream_ordering`, `{t}.thread_id`, and its highlight as `{h}`."""
    own = where.format(t="a", h="a.highlight")
    shared = where.format(t="r", h="FALSE")
    return (
        "(SELECT a.user_id, a.room_id, a.stream_ordering, a.thread_id, a.actions, a.highlight"
        f" FROM event_push_actions a WHERE a.user_id = {user} AND {own}"
        " UNION ALL"
        " SELECT sp.user_id, r.room_id, r.stream_ordering, r.thread_id, NULL::jsonb, FALSE"
        " FROM push_member_spans sp JOIN event_push_room_actions r ON r.room_id = sp.room_id"
        " AND r.stream_ordering > sp.joined_at"
        " AND (sp.left_at IS NULL OR r.stream_ordering < sp.left_at)"
        f" WHERE sp.user_id = {user} AND NOT {user} = ANY(r.excluded) AND {shared})"
    )


def latest_user_actions(where: str, *, user: str = "%(user)s", limit: str = "%(limit)s") -> str:
    """A FROM item like `user_actions` (plus the event's event_id and origin_server_ts)
    holding only each room's `limit` latest actions matching `where`: all that a list
    of the user's `limit` newest actions needs. Each room is read backwards from the
    end of its index and stops at `limit`, so the work follows the user's rooms and
    the limit, not the rooms' history. The rooms of the user's own rows are found by
    stepping through their index one room at a time."""
    own = where.format(t="a", h="a.highlight")
    shared = where.format(t="r", h="FALSE")
    return (
        "(WITH RECURSIVE own_rooms (room_id) AS ("
        f" (SELECT room_id FROM event_push_actions WHERE user_id = {user}"
        " ORDER BY room_id LIMIT 1)"
        " UNION ALL SELECT (SELECT a.room_id FROM event_push_actions a"
        f" WHERE a.user_id = {user} AND a.room_id > o.room_id ORDER BY a.room_id LIMIT 1)"
        " FROM own_rooms o WHERE o.room_id IS NOT NULL)"
        " SELECT n.* FROM own_rooms o, LATERAL (SELECT a.user_id, a.room_id,"
        " a.stream_ordering, a.thread_id, a.actions, a.highlight, e.event_id,"
        " e.origin_server_ts FROM event_push_actions a"
        " JOIN events e ON e.stream_ordering = a.stream_ordering"
        f" WHERE a.user_id = {user} AND a.room_id = o.room_id AND {own}"
        f" ORDER BY a.stream_ordering DESC LIMIT {limit}) n"
        " UNION ALL"
        " SELECT n.* FROM push_member_spans sp, LATERAL (SELECT sp.user_id, r.room_id,"
        " r.stream_ordering, r.thread_id, NULL::jsonb, FALSE, e.event_id,"
        " e.origin_server_ts FROM event_push_room_actions r"
        " JOIN events e ON e.stream_ordering = r.stream_ordering"
        " WHERE r.room_id = sp.room_id AND r.stream_ordering > sp.joined_at"
        " AND (sp.left_at IS NULL OR r.stream_ordering < sp.left_at)"
        f" AND NOT {user} = ANY(r.excluded) AND {shared}"
        f" ORDER BY r.stream_ordering DESC LIMIT {limit}) n"
        f" WHERE sp.user_id = {user})"
    )


async def insert_room_actions(
    conn: AsyncConnection, room_id: str, actions: Sequence[RoomAction]
) -> None:
    """The room rows of one commit, in one statement."""
    if not actions:
        return
    await conn.execute(*room_actions_insert(room_id, actions))


def room_actions_insert(room_id: str, actions: Sequence[RoomAction]) -> tuple[str, tuple[Any, ...]]:
    """The statement of `insert_room_actions` and its parameters, for a caller that
    sends it as part of another statement (a data-modifying CTE)."""
    return (
        "INSERT INTO event_push_room_actions (room_id, stream_ordering, thread_id, excluded)"
        " SELECT %s, g.s, g.t, string_to_array(g.x, ' ') FROM unnest(%s::bigint[], %s::text[],"
        " %s::text[]) AS g(s, t, x) ON CONFLICT DO NOTHING",
        (
            room_id,
            [a.stream_ordering for a in actions],
            [a.thread_id for a in actions],
            [" ".join(a.excluded) for a in actions],
        ),
    )


async def record_spans(conn: AsyncConnection, room_id: str, changes: Sequence[SpanChange]) -> None:
    """Open a span on a join (unless one is open: a join that only changes the profile)
    and close the open one on any other membership, in the order given."""
    for change in changes:
        if change.joined:
            await conn.execute(
                "INSERT INTO push_member_spans (user_id, room_id, joined_at) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (change.user_id, room_id, change.stream_ordering),
            )
        else:
            await conn.execute(
                "UPDATE push_member_spans SET left_at = %s"
                " WHERE room_id = %s AND user_id = %s AND left_at IS NULL",
                (change.stream_ordering, room_id, change.user_id),
            )


async def delete_old_room_actions(
    conn: AsyncConnection, start: int, end: int, all_up_to: int, main: str
) -> int:
    """Delete room rows in [start, end) at or before `all_up_to` (unread for so long
    they no longer count), marking the summaries of their rooms and threads unknown."""
    cur = await conn.execute(
        "WITH gone AS (DELETE FROM event_push_room_actions r"
        " WHERE r.stream_ordering >= %(start)s AND r.stream_ordering < %(end)s"
        " AND r.stream_ordering <= %(all)s"
        " RETURNING r.room_id, COALESCE(r.thread_id, %(main)s) AS thread_id),"
        " marked AS (UPDATE event_push_summary s SET read_up_to = -1"
        " FROM (SELECT DISTINCT room_id, thread_id FROM gone) g"
        " WHERE s.room_id = g.room_id AND s.thread_id = g.thread_id)"
        " SELECT count(*) FROM gone",
        {"start": start, "end": end, "all": all_up_to, "main": main},
    )
    row = await cur.fetchone()
    # A span closed by then has no rows left once the windows before it are pruned.
    await conn.execute(
        "DELETE FROM push_member_spans WHERE left_at < %s AND left_at <= %s", (end, all_up_to)
    )
    return int(row[0]) if row else 0
