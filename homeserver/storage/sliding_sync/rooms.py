"""The reads that order a user's room list and fill the rooms of the windows.

A list is one query over the user's memberships joined to `sliding_sync_rooms`
(bump stamp, room type, encryption), which the event writer keeps current: the
database filters, sorts and counts, and only the window's rows come back. What is
read per room afterwards is read for the rooms of the windows only, in batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from psycopg import AsyncConnection, AsyncCursor

from federation.types import JsonDict
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.rooms.state import StateKey, StateMap
from homeserver.storage.sync import sync as sync_store
from homeserver.storage.timeline.timeline import SqlFilter

# Event types that move a room up the list (Synapse's default bump event types).
BUMP_TYPES = frozenset(
    {
        "m.room.create",
        "m.room.message",
        "m.room.encrypted",
        "m.sticker",
        "m.call.invite",
        "m.poll.start",
        "m.beacon_info",
    }
)


class UserRoom(NamedTuple):
    """One row per room of the user (a tuple: accounts have thousands of rooms)."""

    room_id: str
    membership: str
    event_id: str
    sender: str
    stream_ordering: int
    bump_stamp: int
    room_type: str | None
    is_encrypted: bool


def update_rooms(bumps: Sequence[tuple[str, int]]) -> tuple[str, tuple[Any, ...]]:
    """The write (statement, parameters) that records each (room, latest bump) and the
    rooms' type and encryption as their current state says (one entry per room), for
    the transaction that wrote their events to make as part of its last statement (a
    data-modifying CTE)."""
    return (
        "INSERT INTO sliding_sync_rooms (room_id, bump_stamp, room_type, is_encrypted)"
        " SELECT u.room_id, u.bump,"
        " (SELECT e.json::jsonb #>> '{content,type}' FROM current_state c"
        "  JOIN events e ON e.event_id = c.event_id WHERE c.room_id = u.room_id"
        "  AND c.type = 'm.room.create' AND c.state_key = ''),"
        " EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = u.room_id"
        "  AND c.type = 'm.room.encryption' AND c.state_key = '')"
        " FROM unnest(%s::text[], %s::bigint[]) AS u(room_id, bump)"
        " ON CONFLICT (room_id) DO UPDATE SET"
        " bump_stamp = GREATEST(sliding_sync_rooms.bump_stamp, EXCLUDED.bump_stamp),"
        " room_type = EXCLUDED.room_type, is_encrypted = EXCLUDED.is_encrypted",
        ([room_id for room_id, _ in bumps], [bump for _, bump in bumps]),
    )


_ROOM_COLUMNS = (
    "m.room_id, m.membership, m.event_id, m.sender, m.stream_ordering,"
    " CASE WHEN m.membership = 'join'"
    "  THEN COALESCE(NULLIF(r.bump_stamp, 0), m.stream_ordering)"
    "  WHEN m.membership IN ('invite', 'knock') THEN m.stream_ordering"
    "  ELSE LEAST(COALESCE(NULLIF(r.bump_stamp, 0), m.stream_ordering), m.stream_ordering)"
    " END AS bump,"
    " r.room_type, COALESCE(r.is_encrypted, FALSE)"
)
_ROOMS_OF = (
    " FROM room_memberships m LEFT JOIN sliding_sync_rooms r ON r.room_id = m.room_id"
    " WHERE m.user_id = %(user)s AND NOT m.forgotten"
)


def _listed(since: int | None, ignored: Sequence[str], params: dict[str, Any]) -> str:
    """The conditions every list and subscription applies. A room left of the user's
    own accord (or an invite refused) is not listed, unless it was left after `since`
    (Synapse's rule); an invite from an ignored user is not listed."""
    sql = " AND NOT (m.membership = 'leave' AND m.sender = %(user)s"
    if since is None:
        sql += ")"
    else:
        params["since"] = since
        sql += " AND m.stream_ordering <= %(since)s)"
    if ignored:
        params["ignored"] = list(ignored)
        sql += " AND NOT (m.membership = 'invite' AND m.sender = ANY(%(ignored)s::text[]))"
    return sql


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list's filters (None, or empty for the negative ones: no condition)."""

    is_dm: bool | None = None
    dm_rooms: Sequence[str] = ()
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    space_children: Sequence[str] | None = None
    room_types: Sequence[str | None] | None = None
    not_room_types: Sequence[str | None] = ()
    tags: Sequence[str] | None = None
    not_tags: Sequence[str] = ()

    @property
    def unfiltered(self) -> bool:
        return self == _NO_FILTER

    def sql(self, params: dict[str, Any]) -> str:
        """The filters' conditions, only those set: a list with few filters gets a
        short statement that PostgreSQL plans once and runs without testing the
        others on every room of the account."""
        sql = ""
        if self.is_dm is not None:
            params["dm"] = list(self.dm_rooms)
            sql += f" AND {'' if self.is_dm else 'NOT '}(m.room_id = ANY(%(dm)s::text[]))"
        if self.is_encrypted is not None:
            sql += f" AND {'' if self.is_encrypted else 'NOT '}COALESCE(r.is_encrypted, FALSE)"
        if self.is_invite is not None:
            sql += f" AND (m.membership {'=' if self.is_invite else '<>'} 'invite')"
        if self.space_children is not None:
            params["children"] = list(self.space_children)
            sql += " AND m.room_id = ANY(%(children)s::text[])"
        if self.room_types is not None:
            params["types"] = [t for t in self.room_types if t is not None]
            sql += " AND (COALESCE(r.room_type = ANY(%(types)s::text[]), FALSE)"
            sql += " OR r.room_type IS NULL)" if None in self.room_types else ")"
        not_types = [t for t in self.not_room_types if t is not None]
        if not_types:
            params["not_types"] = not_types
            sql += " AND NOT COALESCE(r.room_type = ANY(%(not_types)s::text[]), FALSE)"
        if None in self.not_room_types:
            sql += " AND r.room_type IS NOT NULL"
        if self.tags is not None:
            params["tags"] = list(self.tags)
            sql += (
                " AND EXISTS (SELECT 1 FROM room_tags t WHERE t.user_id = m.user_id"
                " AND t.room_id = m.room_id AND t.tag = ANY(%(tags)s::text[]))"
            )
        if self.not_tags:
            params["not_tags"] = list(self.not_tags)
            sql += (
                " AND NOT EXISTS (SELECT 1 FROM room_tags t WHERE t.user_id = m.user_id"
                " AND t.room_id = m.room_id AND t.tag = ANY(%(not_tags)s::text[]))"
            )
        return sql


_NO_FILTER = ListQuery()

# How many events since the connection's position a list is brought up to date from
# (`Known`); past that, it is read whole.
CHANGED_CAP = 500


@dataclass(frozen=True, slots=True)
class Known:
    """A list as it was read at the events position `at` (by the connection, or by
    the user's last first answer): the rooms of its window (all of its first
    `limit`, most recently bumped first) and its count."""

    room_ids: Sequence[str]
    count: int
    at: int


class ListRead(NamedTuple):
    total: int
    rooms: list[UserRoom]
    # The timelines read with the list, by (room, lower, upper) window (`guess`).
    guessed: dict[tuple[str, int, int], list[EventRow]]
    # The digest of the user's listed memberships, read first, when asked for.
    digest: str | None
    # False when the list was to be brought up to date from what the connection had
    # (`known`) and that could not be trusted: the caller reads it whole.
    current: bool


async def list_rooms(
    conn: AsyncConnection,
    user_id: str,
    query: ListQuery,
    limit: int,
    *,
    since: int | None,
    ignored: Sequence[str],
    known: Known | None = None,
    digest: bool = False,
    guess: Sequence[tuple[str, int, int]] = (),
    guess_limit: int = 0,
    guess_filter: SqlFilter | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
) -> ListRead:
    """How many of the user's rooms a list holds, and its first `limit`, most
    recently bumped first; a room the user is not joined to is placed by what they
    could see of it. The database sorts and counts: only the window travels.

    With `known`, the list is brought up to date from what was read at `known.at`
    instead of read whole: only its window's rooms and those with events since are
    read (`_changed_cursor`). That holds only if the user's listed memberships are as
    they were: the caller compares the `digest` (read first, in the same round trip)
    with the one it had.

    With `guess` (the (room, lower, upper) windows the caller expects to read the
    timelines of), their last `guess_limit` events are read in the same round trip
    (`recent_events`), by window. `then`: the caller's statements, sent in that
    round trip too (read once this returns)."""
    digested = timelines = None
    if not (digest or known or guess or then):
        cur = await _list_cursor(conn, user_id, query, limit, since, ignored)
    else:
        # All sent, then read after the pipeline's one sync: a single round trip.
        async with conn.pipeline():
            # Before the list: a membership changed after it is read reads the list
            # again next time, rather than be missed.
            if digest:
                digested = await conn.execute(*_digest_query(user_id, since, ignored))
            if known is not None:
                cur = await _changed_cursor(conn, user_id, query, limit, since, ignored, known)
            else:
                # Unfiltered, the list counts what the digest counts.
                counted = not (digest and query.unfiltered)
                cur = await _list_cursor(conn, user_id, query, limit, since, ignored, counted)
            if guess:
                timelines = await conn.execute(
                    *sync_store.recent_events_query(guess, guess_limit, guess_filter)
                )
            if then is not None:
                await then()
    found = {} if timelines is None else sync_store.recent_events_found(await timelines.fetchall())
    guessed = {w: found.get(w[0], []) for w in guess}
    rows = await cur.fetchall()
    read_digest = None
    listed = 0
    if digested is not None:
        listed, xor = (await digested.fetchall())[0]
        read_digest = f"{listed}.{xor}"
    if known is None:
        if digest and query.unfiltered:
            total = int(listed)
        else:
            total = int(rows[0][-1]) if rows else 0
        return ListRead(
            total, [UserRoom._make(row[:-1]) for row in rows], guessed, read_digest, True
        )
    current = bool(rows) and _changes_trusted(rows[0][-3:], known.at, len(known.room_ids))
    rooms = [UserRoom._make(row[:-3]) for row in rows]
    return ListRead(known.count, rooms, guessed, read_digest, current)


def _changes_trusted(tail: Sequence[Any], at: int, known: int) -> bool:
    """Whether the rooms changed since `at` were all read (no more events than the
    cap), none of their memberships moved since (a join or leave between the digest
    and this read), and every room of the window is still listed."""
    events, latest_membership, in_window = tail
    return int(events) < CHANGED_CAP and int(latest_membership) <= at and int(in_window) == known


def _digest_query(
    user_id: str, since: int | None, ignored: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The number of the user's listed memberships and a hash of their events: any
    join, leave, invite or forgotten room since changes it."""
    params: dict[str, Any] = {"user": user_id}
    return (
        "SELECT count(*), COALESCE(bit_xor(hashtextextended(m.event_id, 0)), 0)"
        f" FROM room_memberships m WHERE m.user_id = %(user)s AND NOT m.forgotten"
        f"{_listed(since, ignored, params)}",
        params,
    )


async def timelines(
    conn: AsyncConnection,
    reads: Sequence[tuple[Sequence[tuple[str, int, int]], int, SqlFilter | None]],
    then: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[tuple[str, int, int], list[EventRow]]]:
    """Per (windows, limit, filter): the last `limit` events of each (room, lower,
    upper) window (`recent_events`), all read in one round trip with the caller's
    statements (`then`, read once this returns)."""
    async with conn.pipeline():
        cursors = [
            await conn.execute(*sync_store.recent_events_query(windows, limit, event_filter))
            for windows, limit, event_filter in reads
        ]
        if then is not None:
            await then()
    out = []
    for (windows, _, _), cur in zip(reads, cursors, strict=True):
        found = sync_store.recent_events_found(await cur.fetchall())
        out.append({w: found.get(w[0], []) for w in windows})
    return out


async def _list_cursor(
    conn: AsyncConnection,
    user_id: str,
    query: ListQuery,
    limit: int,
    since: int | None,
    ignored: Sequence[str],
    counted: bool = True,
) -> AsyncCursor[Any]:
    """The list's first `limit` rows, each with the count of the list unless the caller
    counts it otherwise (a quarter of the statement's time, at 1,000 rooms)."""
    params: dict[str, Any] = {"user": user_id, "limit": limit}
    where = _listed(since, ignored, params) + query.sql(params)
    return await conn.execute(
        f"SELECT {_ROOM_COLUMNS}{', count(*) OVER ()' if counted else ', NULL'}"
        f"{_ROOMS_OF}{where} ORDER BY bump DESC, m.room_id LIMIT %(limit)s",
        params,
    )


async def _changed_cursor(
    conn: AsyncConnection,
    user_id: str,
    query: ListQuery,
    limit: int,
    since: int | None,
    ignored: Sequence[str],
    known: Known,
) -> AsyncCursor[Any]:
    """The list's first `limit` among the rooms of the window as read at `known.at`
    and the user's rooms with events since (up to `CHANGED_CAP` events): with the
    user's memberships unchanged, a room bumps only with an event and no bump ever
    goes down, so no other room can have come into the window. `since` is the
    answer's own (None for a first answer), for the rooms it lists (`_listed`).

    Each row also carries how many events were looked at, the latest position of the
    memberships read, and how many rooms of the window are still listed
    (`_changes_trusted`)."""
    params: dict[str, Any] = {
        "user": user_id,
        "limit": limit,
        "cap": CHANGED_CAP,
        "window": list(known.room_ids),
        "at": known.at,
    }
    where = _listed(since, ignored, params) + query.sql(params)
    return await conn.execute(
        "WITH recent AS MATERIALIZED (SELECT e.room_id FROM events e"
        " WHERE e.stream_ordering > %(at)s ORDER BY e.stream_ordering LIMIT %(cap)s)"
        f" SELECT {_ROOM_COLUMNS}, (SELECT count(*) FROM recent), max(m.stream_ordering) OVER (),"
        " count(*) FILTER (WHERE m.room_id = ANY(%(window)s::text[])) OVER ()"
        " FROM (SELECT unnest(%(window)s::text[]) UNION SELECT room_id FROM recent)"
        " AS c(room_id)"
        # Lookups per room (LIMIT keeps the planner from joining every room of the
        # user instead, as it does unasked: it has no statistics to go by).
        " CROSS JOIN LATERAL (SELECT * FROM room_memberships m"
        "  WHERE m.room_id = c.room_id AND m.user_id = %(user)s LIMIT 1) m"
        " LEFT JOIN LATERAL (SELECT * FROM sliding_sync_rooms r"
        "  WHERE r.room_id = m.room_id LIMIT 1) r ON TRUE"
        f" WHERE NOT m.forgotten{where} ORDER BY bump DESC, m.room_id LIMIT %(limit)s",
        params,
    )


async def user_rooms(
    conn: AsyncConnection,
    user_id: str,
    room_ids: Sequence[str],
    *,
    since: int | None,
    ignored: Sequence[str],
) -> list[UserRoom]:
    """These rooms of the user (subscriptions), as the lists would show them."""
    params: dict[str, Any] = {"user": user_id, "rooms": list(room_ids)}
    cur = await conn.execute(
        f"SELECT {_ROOM_COLUMNS}{_ROOMS_OF}{_listed(since, ignored, params)}"
        " AND m.room_id = ANY(%(rooms)s::text[])",
        params,
    )
    return [UserRoom._make(row) for row in await cur.fetchall()]


async def room_ids_of_user(conn: AsyncConnection, user_id: str) -> frozenset[str]:
    """Every room the user has a membership of: what a waiting request listens to."""
    cur = await conn.execute(
        "SELECT room_id FROM room_memberships WHERE user_id = %s AND NOT forgotten", (user_id,)
    )
    return frozenset(room_id for (room_id,) in await cur.fetchall())


@dataclass(slots=True)
class StateRead:
    """What `current_state` read in its round trip."""

    states: dict[str, StateMap]
    summaries: dict[str, sync_store.RoomSummary]
    # The redaction of each state event read that has been redacted (the others have
    # not), and the device's transaction ids of the events asked for (`own`).
    redacted: dict[str, str]
    txn_ids: dict[str, str]


async def current_state(
    conn: AsyncConnection,
    room_ids: Sequence[str],
    keys: Iterable[StateKey],
    whole_types: Iterable[str] = (),
    everything: bool = False,
    *,
    summarised: Sequence[str] = (),
    user_id: str = "",
    own: Sequence[str] = (),
    device_id: str = "",
    then: Callable[[], Awaitable[None]] | None = None,
) -> StateRead:
    """Per room, the current state entries at `keys`, of every state key of
    `whole_types`, or all of them with `everything`, each with its redaction if
    redacted; and in the same round trip, the summaries of the rooms `summarised` for
    `user_id` (`room_summaries`) and the transaction ids `device_id` used for the
    events `own` (`txn_ids_for`): what rendering the answer would otherwise ask in
    round trips of its own. `then`: the caller's statements, sent in that round trip
    too (read once this returns)."""
    key_list = sorted(set(keys))
    params = {
        "rooms": list(room_ids),
        "types": [k[0] for k in key_list],
        "keys": [k[1] for k in key_list],
        "whole": sorted(set(whole_types)),
    }
    where = (
        ""
        if everything
        else " AND ((c.type, c.state_key) IN (SELECT * FROM unnest(%(types)s::text[],"
        " %(keys)s::text[])) OR c.type = ANY(%(whole)s::text[]))"
    )
    async with conn.pipeline():
        # The redaction by a subquery per entry: a lookup by the events key whatever
        # the planner thinks of the table's size.
        cur = await conn.execute(
            "SELECT c.room_id, c.type, c.state_key, c.event_id,"
            " (SELECT e.redacted_by FROM events e WHERE e.event_id = c.event_id)"
            f" FROM current_state c WHERE c.room_id = ANY(%(rooms)s::text[]){where}",
            params,
        )
        summaries = (
            await conn.execute(*sync_store.room_summaries_query(summarised, user_id))
            if summarised
            else None
        )
        txn_ids = await conn.execute(*event_store.txn_ids_query(own)) if own else None
        if then is not None:
            await then()
    out: dict[str, StateMap] = {room_id: {} for room_id in room_ids}
    redacted: dict[str, str] = {}
    for room_id, event_type, state_key, event_id, redacted_by in await cur.fetchall():
        out[room_id][(event_type, state_key)] = event_id
        if redacted_by is not None:
            redacted[event_id] = redacted_by
    found = {} if summaries is None else sync_store.room_summaries_found(await summaries.fetchall())
    ids = (
        {}
        if txn_ids is None
        else event_store.txn_ids_found(await txn_ids.fetchall(), user_id, device_id)
    )
    return StateRead(out, found, redacted, ids)


async def state_changes(
    conn: AsyncConnection, windows: Sequence[tuple[str, int, int]]
) -> dict[str, StateMap]:
    """Per (room, lower, upper): the current state entries set by events in
    (lower, upper], i.e. what the client that had the room at `lower` lacks."""
    if not windows:
        return {}
    cur = await conn.execute(
        "SELECT w.room_id, c.type, c.state_key, c.event_id"
        " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS w(room_id, lower, upper)"
        " JOIN current_state c ON c.room_id = w.room_id"
        " JOIN events e ON e.event_id = c.event_id"
        " WHERE e.stream_ordering > w.lower AND e.stream_ordering <= w.upper",
        ([w[0] for w in windows], [w[1] for w in windows], [w[2] for w in windows]),
    )
    out: dict[str, StateMap] = {}
    for room_id, event_type, state_key, event_id in await cur.fetchall():
        out.setdefault(room_id, {})[(event_type, state_key)] = event_id
    return out


@dataclass(frozen=True, slots=True)
class Member:
    displayname: str | None
    avatar_url: str | None


async def member_profiles(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Member]:
    """Per (room, user), the name and avatar of the user's current membership."""
    if not pairs:
        return {}
    cur = await conn.execute(
        "SELECT m.room_id, m.user_id, m.displayname, m.avatar_url FROM room_memberships m"
        " JOIN unnest(%s::text[], %s::text[]) AS p(room_id, user_id)"
        " ON m.room_id = p.room_id AND m.user_id = p.user_id",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    return {(r, u): Member(name, avatar) for r, u, name, avatar in await cur.fetchall()}


async def space_children(conn: AsyncConnection, space_ids: Sequence[str]) -> set[str]:
    """The rooms these spaces list as children (m.space.child with a `via`)."""
    cur = await conn.execute(
        "SELECT c.state_key FROM current_state c JOIN events e ON e.event_id = c.event_id"
        " WHERE c.room_id = ANY(%s::text[]) AND c.type = 'm.space.child'"
        " AND jsonb_typeof(e.json::jsonb #> '{content,via}') = 'array'"
        " AND jsonb_array_length(e.json::jsonb #> '{content,via}') > 0",
        (list(space_ids),),
    )
    return {state_key for (state_key,) in await cur.fetchall()}


async def room_account_data(
    conn: AsyncConnection, user_id: str, room_ids: Sequence[str]
) -> dict[str, list[JsonDict]]:
    """All the user's account data of these rooms, as events by room."""
    if not room_ids:
        return {}
    cur = await conn.execute(
        "SELECT room_id, type, content::text FROM account_data"
        " WHERE user_id = %s AND room_id = ANY(%s::text[]) ORDER BY stream_id",
        (user_id, list(room_ids)),
    )
    out: dict[str, list[JsonDict]] = {}
    for room_id, event_type, content in await cur.fetchall():
        out.setdefault(room_id, []).append({"type": event_type, "content": orjson.loads(content)})
    return out


async def global_account_data(
    conn: AsyncConnection, user_id: str, types: Sequence[str]
) -> dict[str, Any]:
    """The user's global account data of these types, by type."""
    cur = await conn.execute(
        "SELECT type, content::text FROM account_data"
        " WHERE user_id = %s AND room_id = '' AND type = ANY(%s::text[])",
        (user_id, list(types)),
    )
    return {event_type: orjson.loads(content) for event_type, content in await cur.fetchall()}
