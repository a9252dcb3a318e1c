"""Per-user push actions of events, unread notification counts, and what push
evaluation reads about a room."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection, AsyncCursor

from homeserver.storage.core import streams
from homeserver.storage.push.room_actions import (
    delete_old_room_actions,
    latest_user_actions,
    user_actions,
)

MAIN_THREAD = "main"
# thread_id of receipts that name no thread (storage/receipts.UNTHREADED)
UNTHREADED = ""
READ_TYPES = ["m.read", "m.read.private"]
NOTIFY = ("notify",)  # the actions a NULL `actions` stands for


# Separates user ids in a group's text: no user id holds a space (the grammar of user
# ids and of server names has none).
USER_SEPARATOR = " "


@dataclass(frozen=True, slots=True)
class PushActionGroup:
    """Users of one room that one event notifies alike: a row each in
    event_push_actions. Sent as one text per group, not a value per user, so that a
    message into a room of thousands costs the driver and the server a few values."""

    user_ids: Sequence[str]
    stream_ordering: int
    thread_id: str | None  # None: the main timeline
    actions: str | None  # JSON text; None: the plain ["notify"]
    highlight: bool


@dataclass(frozen=True, slots=True)
class Counts:
    notifications: int
    highlights: int


@dataclass(frozen=True, slots=True)
class NotificationRow:
    room_id: str
    event_id: str
    stream_ordering: int
    actions: list[Any]
    ts: int
    read: bool


async def joined_members_with_names(
    conn: AsyncConnection, room_id: str
) -> list[tuple[str, str | None]]:
    """(user id, display name in the room) of every joined member."""
    cur = await conn.execute(
        "SELECT user_id, displayname FROM room_memberships"
        " WHERE room_id = %s AND membership = 'join'",
        (room_id,),
    )
    return [(user_id, name) for user_id, name in await cur.fetchall()]


async def insert_push_actions(
    conn: AsyncConnection, room_id: str, groups: Sequence[PushActionGroup]
) -> None:
    """Store the groups' rows in one statement (the send path calls this once per
    commit). Nothing else: the unread counts in `event_push_summary` take them in
    when they are next read (`unread_counts`), not a row update per member per
    message."""
    if not groups:
        return
    await conn.execute(
        "INSERT INTO event_push_actions (user_id, stream_ordering, room_id, thread_id,"
        " actions, highlight)"
        " SELECT u, g.s, %s, g.t, g.a::jsonb, g.h FROM unnest(%s::text[], %s::bigint[],"
        " %s::text[], %s::text[], %s::boolean[]) AS g(users, s, t, a, h),"
        " LATERAL unnest(string_to_array(g.users, %s)) AS u"
        " ON CONFLICT DO NOTHING",
        (
            room_id,
            [USER_SEPARATOR.join(g.user_ids) for g in groups],
            [g.stream_ordering for g in groups],
            [g.thread_id for g in groups],
            [g.actions for g in groups],
            [g.highlight for g in groups],
            USER_SEPARATOR,
        ),
    )


# Where the user has read a push action's room up to: the latest read receipt that
# covers the action (an unthreaded one, or one in the action's own thread, 'main' for
# the main timeline), or their join, whichever is later (what came before the join,
# such as the invite, was seen as an invite). The membership is read by its key, its
# kind tested after: a form that plans as one lookup per action without statistics
# (no autovacuum, so no ANALYZE), which once tied the primary key with a narrower
# room_memberships_user and read all the user's rooms per action
# (tests/integration/test_push_plans.py).
_READ_UP_TO = (
    "GREATEST((SELECT max(c.event_stream_ordering) FROM receipts c"
    " WHERE c.room_id = a.room_id AND c.user_id = a.user_id"
    " AND c.receipt_type = ANY(%(types)s)"
    " AND c.thread_id IN (%(unthreaded)s, COALESCE(a.thread_id, %(main)s))),"
    " (SELECT CASE WHEN m.membership = 'join' THEN m.stream_ordering END"
    " FROM room_memberships m WHERE m.room_id = a.room_id AND m.user_id = a.user_id), 0)"
)


# Where the user has read a summary's room and thread up to (as _READ_UP_TO).
_SUMMARY_READ_UP_TO = (
    "GREATEST((SELECT max(c.event_stream_ordering) FROM receipts c"
    " WHERE c.room_id = s.room_id AND c.user_id = s.user_id"
    " AND c.receipt_type = ANY(%(types)s) AND c.thread_id IN (%(unthreaded)s, s.thread_id)),"
    " (SELECT CASE WHEN m.membership = 'join' THEN m.stream_ordering END"
    " FROM room_memberships m WHERE m.room_id = s.room_id AND m.user_id = s.user_id), 0)"
)


# Where a summary's room is folded up to: the safe position of the read, or further
# when an earlier read folded further (its summaries already hold those actions).
def _folded(alias: str) -> str:
    return (
        "GREATEST(%(safe)s, (SELECT f.up_to FROM event_push_folded f"
        f" WHERE f.user_id = {alias}.user_id AND f.room_id = {alias}.room_id))"
    )


# The two-key advisory lock (the second key a hash of the user id) under which one
# transaction at a time folds a user's new push actions into their summaries.
_FOLD_LOCK = 0x50757346  # "PusF"


async def _fold(conn: AsyncConnection, user_id: str, room_ids: Sequence[str], up_to: int) -> None:
    """Add the user's push actions in these rooms after each room's folded position
    and up to `up_to` (a position below which every transaction has committed) to
    their summaries, and move the rooms' folded positions there. A summary read up to
    before the first added action gains them all; one read up to past it (a receipt
    for an event committed by another process first) is marked unknown, to be
    recounted. Rooms with nothing new are not written."""
    await conn.execute(
        "WITH bounds AS (SELECT r.room_id, COALESCE(f.up_to, 0) AS up_to"
        " FROM unnest(%(rooms)s::text[]) AS r(room_id) LEFT JOIN event_push_folded f"
        " ON f.user_id = %(user)s AND f.room_id = r.room_id WHERE COALESCE(f.up_to, 0) < %(to)s),"
        " added AS (SELECT a.room_id, COALESCE(a.thread_id, %(main)s) AS thread_id,"
        " min(a.stream_ordering) AS first, count(*) AS n, count(*) FILTER (WHERE a.highlight) AS h"
        " FROM bounds b, LATERAL "
        + user_actions(
            "{t}.room_id = b.room_id AND {t}.stream_ordering > b.up_to"
            " AND {t}.stream_ordering <= %(to)s"
        )
        + " a GROUP BY 1, 2),"
        " summed AS (INSERT INTO event_push_summary AS s (user_id, room_id, thread_id,"
        " read_up_to, notifications, highlights)"
        " SELECT %(user)s, room_id, thread_id, first - 1, n, h FROM added"
        " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET"
        " notifications = CASE WHEN s.read_up_to <= EXCLUDED.read_up_to"
        " THEN s.notifications + EXCLUDED.notifications ELSE 0 END,"
        " highlights = CASE WHEN s.read_up_to <= EXCLUDED.read_up_to"
        " THEN s.highlights + EXCLUDED.highlights ELSE 0 END,"
        " read_up_to = CASE WHEN s.read_up_to <= EXCLUDED.read_up_to"
        " THEN s.read_up_to ELSE -1 END)"
        " INSERT INTO event_push_folded AS f (user_id, room_id, up_to)"
        " SELECT DISTINCT %(user)s, room_id, %(to)s::bigint FROM added"
        " ON CONFLICT (user_id, room_id) DO UPDATE SET up_to = EXCLUDED.up_to",
        {"user": user_id, "rooms": list(room_ids), "to": up_to, "main": MAIN_THREAD},
    )


async def unread_counts(
    conn: AsyncConnection,
    user_id: str,
    room_ids: Sequence[str],
    safe: int | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
) -> dict[tuple[str, str], Counts]:
    """Unread (notification, highlight) counts by (room, thread; 'main' for the main
    timeline): actions on events after the read receipt covering them.

    Actions up to the safe position (every transaction below it has committed) are
    first folded into the summaries, one row per room and thread; a summary whose read
    position is no longer the user's (a receipt since, or unknown) is recounted from
    the actions after the new position up to the folded position, and stored, so the
    next sync reads it as it is. Actions after that have committed already are counted
    as they are. `safe`, when the caller knows one (any position once safe stays
    so), spares reading it.

    The statements are pipelined in the pipeline's one implicit transaction (which
    holds the fold lock until its end): the whole is two round trips, and `then`
    (the caller's own statements, sent after the counts are read) rides the last."""
    if not room_ids:
        if then is not None:
            await then()
        return {}
    out: dict[tuple[str, str], Counts] = {}
    async with conn.pipeline():
        if safe is None:
            await conn.execute(_LOCK, (_FOLD_LOCK, user_id))
            safe = (await streams.safe_positions(conn))["events"]
            queued = await _queue_counts(conn, user_id, room_ids, safe)
        else:
            queued = await queue_unread_counts(conn, user_id, room_ids, safe)
        summaries = await queued.summaries.fetchall()
        for room_id, thread_id, read_up_to, n, h, position, folded in summaries:
            if read_up_to != position:
                n, h = await _recount(conn, user_id, room_id, thread_id, int(position), int(folded))
            if n:
                out[(room_id, thread_id)] = Counts(int(n), int(h))
        _add_recent(out, await queued.recent.fetchall())
        if then is not None:
            await then()
    return out


_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"


@dataclass(frozen=True, slots=True)
class QueuedCounts:
    """The reads of the unread counts, sent in a pipeline (`queue_unread_counts`)."""

    summaries: AsyncCursor[Any]
    recent: AsyncCursor[Any]

    async def counts(self) -> dict[tuple[str, str], Counts] | None:
        """The counts, as `unread_counts` gives them; None when a summary must first
        be recounted (a receipt moved since it was stored): `unread_counts` does that."""
        out: dict[tuple[str, str], Counts] = {}
        for room_id, thread_id, read_up_to, n, h, position, _ in await self.summaries.fetchall():
            if read_up_to != position:
                return None
            if n:
                out[(room_id, thread_id)] = Counts(int(n), int(h))
        _add_recent(out, await self.recent.fetchall())
        return out


async def queue_unread_counts(
    conn: AsyncConnection, user_id: str, room_ids: Sequence[str], safe: int
) -> QueuedCounts:
    """Send the statements of `unread_counts` (the fold lock, the fold at `safe`, the
    reads) in the caller's pipeline, with the caller's own statements: the counts
    ride their round trip. The caller syncs the pipeline (which ends the implicit
    transaction holding the lock) before reading `counts`, and opens no nested
    pipeline in between (its sync would release the lock early)."""
    await conn.execute(_LOCK, (_FOLD_LOCK, user_id))
    return await _queue_counts(conn, user_id, room_ids, safe)


async def _queue_counts(
    conn: AsyncConnection, user_id: str, room_ids: Sequence[str], safe: int
) -> QueuedCounts:
    """The fold and the reads, under the fold lock the caller has taken."""
    await _fold(conn, user_id, room_ids, safe)
    params = {
        "user": user_id,
        "rooms": list(room_ids),
        "types": READ_TYPES,
        "unthreaded": UNTHREADED,
        "main": MAIN_THREAD,
        "safe": safe,
    }
    summaries = await conn.execute(
        "SELECT s.room_id, s.thread_id, s.read_up_to, s.notifications, s.highlights,"
        f" {_SUMMARY_READ_UP_TO}, {_folded('s')} FROM event_push_summary s"
        " WHERE s.user_id = %(user)s AND s.room_id = ANY(%(rooms)s)",
        params,
    )
    # Reads no summary: sent before the recounts, which write them.
    recent = await conn.execute(
        "SELECT a.room_id, COALESCE(a.thread_id, %(main)s), count(*),"
        " count(*) FILTER (WHERE a.highlight) FROM "
        + user_actions("{t}.room_id = ANY(%(rooms)s) AND {t}.stream_ordering > %(safe)s")
        + f" a WHERE a.stream_ordering > {_folded('a')}"
        f" AND a.stream_ordering > {_READ_UP_TO}"
        " GROUP BY 1, 2",
        params,
    )
    return QueuedCounts(summaries, recent)


def _add_recent(out: dict[tuple[str, str], Counts], rows: Sequence[tuple[Any, ...]]) -> None:
    """Add the counts of actions not yet folded."""
    for room_id, thread_id, n, h in rows:
        before = out.get((room_id, thread_id), Counts(0, 0))
        out[(room_id, thread_id)] = Counts(before.notifications + n, before.highlights + h)


async def _recount(
    conn: AsyncConnection, user_id: str, room_id: str, thread_id: str, position: int, folded: int
) -> tuple[int, int]:
    """Count the actions of a summary after `position` and up to `folded`, where the
    room's actions are in the summaries (under the fold lock, taken by the caller),
    and store them."""
    cur = await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE a.highlight) FROM "
        + user_actions(
            "{t}.room_id = %(room)s AND {t}.stream_ordering > %(position)s"
            " AND {t}.stream_ordering <= %(folded)s"
            " AND COALESCE({t}.thread_id, %(main)s) = %(thread)s"
        )
        + " a",
        {
            "user": user_id,
            "room": room_id,
            "position": position,
            "folded": folded,
            "main": MAIN_THREAD,
            "thread": thread_id,
        },
    )
    row = await cur.fetchone()
    n, h = (int(row[0]), int(row[1])) if row else (0, 0)
    await conn.execute(
        "UPDATE event_push_summary SET read_up_to = %s, notifications = %s, highlights = %s"
        " WHERE user_id = %s AND room_id = %s AND thread_id = %s",
        (position, n, h, user_id, room_id, thread_id),
    )
    return n, h


async def notifications(
    conn: AsyncConnection, user_id: str, before: int | None, limit: int, only_highlight: bool
) -> list[NotificationRow]:
    """The user's notifications, newest first, older than `before` when given: the
    newest of each room's newest `limit`, so a page reads no more of a room's history
    than it can show.

    Bitmap scans are off for the statement: without statistics (no autovacuum, so no
    ANALYZE) the planner guesses a room holds fewer rows than the limit and prefers
    reading all of them through a bitmap and sorting, to walking the room's index
    backwards until the limit, which is the bound (tests/integration/test_push_plans.py)."""
    params = {
        "user": user_id,
        "before": before,
        "only": only_highlight,
        "limit": limit,
        "types": READ_TYPES,
        "unthreaded": UNTHREADED,
        "main": MAIN_THREAD,
    }
    async with conn.pipeline(), conn.transaction():
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        cur = await conn.execute(
            "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions::text,"
            f" a.origin_server_ts, a.stream_ordering <= {_READ_UP_TO}"
            " FROM "
            + latest_user_actions(
                # a bound the index reads from, when there is one
                "{t}.stream_ordering < COALESCE(%(before)s::bigint, 9223372036854775807)"
                " AND (NOT %(only)s OR {h})"
            )
            + " a ORDER BY a.stream_ordering DESC LIMIT %(limit)s",
            params,
        )
        rows = await cur.fetchall()
    return [
        NotificationRow(
            room_id, event_id, so, orjson.loads(actions) if actions else list(NOTIFY), ts, read
        )
        for room_id, event_id, so, actions, ts, read in rows
    ]


# -- delivery to push gateways ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingAction:
    """A push action not yet sent to a pusher, with what the notification needs."""

    stream_ordering: int
    room_id: str
    event_id: str
    origin_server_ts: int
    actions: list[Any]
    highlight: bool


async def pending_actions(
    conn: AsyncConnection, user_id: str, after: int, up_to: int, limit: int
) -> list[PendingAction]:
    """The user's push actions in (after, up_to], oldest first."""
    cur = await conn.execute(
        "SELECT a.stream_ordering, a.room_id, e.event_id, e.origin_server_ts, a.actions::text,"
        " a.highlight FROM "
        + user_actions("{t}.stream_ordering > %(after)s AND {t}.stream_ordering <= %(up_to)s")
        + " a JOIN events e ON e.stream_ordering = a.stream_ordering"
        " ORDER BY a.stream_ordering LIMIT %(limit)s",
        {"user": user_id, "after": after, "up_to": up_to, "limit": limit},
    )
    return [
        PendingAction(
            so, room_id, event_id, ts, orjson.loads(actions) if actions else list(NOTIFY), h
        )
        for so, room_id, event_id, ts, actions, h in await cur.fetchall()
    ]


async def unread_pending_actions(
    conn: AsyncConnection, user_id: str, after: int, up_to: int, limit: int
) -> list[PendingAction]:
    """The user's push actions in (after, up_to] still unread (after the read receipt
    covering them) in rooms the user is joined or invited to, oldest first: what an
    email notification tells of (an invite counts as read once the user joins)."""
    cur = await conn.execute(
        "SELECT a.stream_ordering, a.room_id, e.event_id, e.origin_server_ts, a.actions::text,"
        " a.highlight FROM "
        + user_actions("{t}.stream_ordering > %(after)s AND {t}.stream_ordering <= %(up_to)s")
        + " a JOIN events e ON e.stream_ordering = a.stream_ordering"
        " JOIN room_memberships m ON m.room_id = a.room_id AND m.user_id = a.user_id"
        " AND m.membership IN ('join', 'invite')"
        f" WHERE a.stream_ordering > {_READ_UP_TO}"
        " ORDER BY a.stream_ordering LIMIT %(limit)s",
        {
            "user": user_id,
            "after": after,
            "up_to": up_to,
            "limit": limit,
            "types": READ_TYPES,
            "unthreaded": UNTHREADED,
            "main": MAIN_THREAD,
        },
    )
    return [
        PendingAction(
            so, room_id, event_id, ts, orjson.loads(actions) if actions else list(NOTIFY), h
        )
        for so, room_id, event_id, ts, actions, h in await cur.fetchall()
    ]


async def has_actions_after(conn: AsyncConnection, user_id: str, after: int) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM " + user_actions("{t}.stream_ordering > %(after)s") + " a)",
        {"user": user_id, "after": after},
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def total_unread(conn: AsyncConnection, user_id: str) -> int:
    """Unread notifications over every room the user is joined to: sync's counts,
    summed, from the same summaries (folding what is new into them, as a sync does), so
    the work follows what happened since the user's last read of them, not the rooms'
    history."""
    cur = await conn.execute(
        "SELECT room_id FROM room_memberships WHERE user_id = %s AND membership = 'join'",
        (user_id,),
    )
    rooms = [room_id for (room_id,) in await cur.fetchall()]
    counts = await unread_counts(conn, user_id, rooms)
    return sum(count.notifications for count in counts.values())


async def display_name(conn: AsyncConnection, room_id: str, user_id: str) -> str | None:
    """A user's display name in a room, from their membership."""
    cur = await conn.execute(
        "SELECT displayname FROM room_memberships WHERE room_id = %s AND user_id = %s",
        (room_id, user_id),
    )
    row = await cur.fetchone()
    return row[0] if row else None


# -- retention --------------------------------------------------------------------------


# The two-key advisory lock that lets one process at a time prune.
_RETENTION_LOCK = (0x50757352, 0)  # "PusR"
RETENTION_WINDOW = 10_000  # stream positions per DELETE


async def try_lock_retention(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _RETENTION_LOCK)
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock_retention(conn: AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", _RETENTION_LOCK)


async def stream_position_before(conn: AsyncConnection, ts: int) -> int:
    """The highest stream ordering whose event was sent before `ts` (ms), found by
    bisecting the stream: origin_server_ts grows with the stream closely enough for an
    age limit, and each probe is one lookup in the stream's unique index."""
    cur = await conn.execute("SELECT min(stream_ordering), max(stream_ordering) FROM events")
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return 0
    low, high = max(int(row[0]), 1) - 1, int(row[1])
    # Invariant: events up to `low` are older than ts; events after `high` are not.
    while low < high:
        mid = (low + high + 1) // 2
        cur = await conn.execute(
            "SELECT origin_server_ts FROM events WHERE stream_ordering >= %s"
            " ORDER BY stream_ordering LIMIT 1",
            (mid,),
        )
        found = await cur.fetchone()
        if found is not None and int(found[0]) < ts:
            low = mid
        else:
            high = mid - 1
    return low


async def first_stream_position(conn: AsyncConnection) -> int:
    """Where push actions can start: the lowest positive stream ordering (an index read;
    the lowest push action itself would take a scan of the table)."""
    cur = await conn.execute("SELECT min(stream_ordering) FROM events WHERE stream_ordering > 0")
    row = await cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


async def delete_old_actions(
    conn: AsyncConnection, start: int, end: int, read_up_to: int, all_up_to: int
) -> int:
    """Delete, among push actions in [start, end), those at or before `all_up_to`, and
    those at or before `read_up_to` that the user has read; how many went. The
    summaries they were in are marked unknown, to be recounted by the next sync.
    Room rows go by the first bound only (each stands for many members' reads)."""
    shared = await delete_old_room_actions(conn, start, end, all_up_to, MAIN_THREAD)
    cur = await conn.execute(
        "WITH gone AS (DELETE FROM event_push_actions a"
        " WHERE a.stream_ordering >= %(start)s AND a.stream_ordering < %(end)s"
        " AND (a.stream_ordering <= %(all)s OR (a.stream_ordering <= %(read)s"
        f" AND a.stream_ordering <= {_READ_UP_TO}))"
        " RETURNING a.user_id, a.room_id, COALESCE(a.thread_id, %(main)s) AS thread_id),"
        " marked AS (UPDATE event_push_summary s SET read_up_to = -1"
        " FROM (SELECT DISTINCT user_id, room_id, thread_id FROM gone) g"
        " WHERE s.user_id = g.user_id AND s.room_id = g.room_id AND s.thread_id = g.thread_id)"
        " SELECT count(*) FROM gone",
        {
            "start": start,
            "end": end,
            "all": all_up_to,
            "read": read_up_to,
            "types": READ_TYPES,
            "unthreaded": UNTHREADED,
            "main": MAIN_THREAD,
        },
    )
    row = await cur.fetchone()
    return shared + (int(row[0]) if row else 0)
