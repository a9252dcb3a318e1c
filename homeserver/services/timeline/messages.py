"""Room history for clients: /messages, /context, /event and timestamp_to_event.

Pages are read in topological order (see services/timeline/pagination.py) and then passed
through history visibility. When visibility or the filter hides much of a page, a
few more rounds are read so that clients are not handed a string of empty pages;
the `end` token is the gap after the last event *examined*, so nothing hidden is
examined twice and nothing visible is skipped.

/messages also fills holes in the timeline: a page that reaches an event whose prev
events we lack (a backward extremity: our join, or a gap bridged on receipt) stops
just before it, the hole is backfilled from other servers (see
federation_backfill.py), and the page is read again, now with the backfilled events
in their topological place. When the hole cannot be filled in time the page ends
before that event, so the next page comes back to it; a hole nobody could fill stops
being one for a while, and pages then read past it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from federation.events import MEMBER, Event
from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.accounts.filters import RoomEventFilter, only_fields, parse_filter
from homeserver.services.core.errors import ServiceError, bad_json, invalid_param, not_found
from homeserver.services.core.replica_reads import read_recent
from homeserver.services.remote.backfill import Backfiller
from homeserver.services.rooms.event_cache import EventCache, state_entries
from homeserver.services.timeline.format import format_events
from homeserver.services.timeline.pagination import (
    START,
    Token,
    gap_before,
    parse_direction,
    parse_limit,
    parse_token,
    resolve,
    token_for,
)
from homeserver.services.timeline.visibility import (
    RoomAccess,
    event_of,
    event_room_access,
    filter_visible,
    room_access,
)
from homeserver.storage.core.pool import Connection, Database, Pool
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.remote import backfill as backfill_store
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import state
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline import timeline
from homeserver.storage.timeline.timeline import Position, SqlFilter

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
# Extra reads when visibility or the filter hides events, before handing back a short page.
MAX_ROUNDS = 3
TIMESTAMP_CANDIDATES = 50
# Backfills one /messages page may start (each fills up to a hundred events).
MAX_BACKFILLS = 5


def parse_event_filter(text: str | None) -> RoomEventFilter | None:
    """The `filter` query parameter: a RoomEventFilter as JSON."""
    if text is None:
        return None
    try:
        definition = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise bad_json("filter is not valid JSON") from None
    if not isinstance(definition, dict):
        raise bad_json("filter must be a JSON object")
    wrapped: dict[str, Any] = {"room": {"timeline": definition}}
    if "event_fields" in definition:
        wrapped["event_fields"] = definition["event_fields"]
    parsed = parse_filter(wrapped)
    if parsed.field_paths is None:
        return parsed.room.timeline
    return replace(parsed.room.timeline, field_paths=parsed.field_paths)


def keep_fields(events: list[JsonDict], event_filter: RoomEventFilter | None) -> list[JsonDict]:
    """The filter's `event_fields` applied to a list of events."""
    if event_filter is None or event_filter.field_paths is None:
        return events
    return [only_fields(event, event_filter.field_paths) for event in events]


def sql_filter_for(event_filter: RoomEventFilter | None) -> SqlFilter | None:
    if event_filter is None:
        return None
    types = event_filter.types
    return SqlFilter(
        types=None if types is None else [*types.exact, *types.wildcards],
        not_types=[*event_filter.not_types.exact, *event_filter.not_types.wildcards],
        senders=None if event_filter.senders is None else sorted(event_filter.senders),
        not_senders=sorted(event_filter.not_senders),
    )


def position_of(cache: EventCache, row: EventRow) -> Position:
    assert row.stream_ordering is not None
    return Position(event_of(cache, row).depth, row.stream_ordering)


@dataclass(slots=True)
class Page:
    """Visible events of one page; `cursor` is the gap after the last event examined;
    `gap` the event, just past the cursor, before which a hole is due to be filled."""

    cursor: Position
    rows: list[EventRow] = field(default_factory=list)
    memberships: dict[str, str] = field(default_factory=dict)
    txn_ids: dict[str, str] = field(default_factory=dict)
    more: bool = False
    gap: str | None = None


async def read_page(
    conn: Connection,
    cache: EventCache,
    requester: Requester,
    room_id: str,
    *,
    cursor: Position,
    bound: Position | None,
    forward: bool,
    limit: int,
    event_filter: RoomEventFilter | None,
    stop_at_gaps: bool = False,
) -> Page:
    """Up to `limit` visible events from `cursor` towards `bound` (exclusive of the
    cursor when forwards, inclusive when backwards: both are gaps). With
    `stop_at_gaps`, the page ends before an event with a hole behind it (`gap`)."""
    page = Page(cursor=cursor)
    sql_filter = sql_filter_for(event_filter)
    gaps: set[str] | None = set() if stop_at_gaps else None
    for _ in range(MAX_ROUNDS):
        need = limit - len(page.rows)
        lower, upper = (page.cursor, bound) if forward else (bound, page.cursor)
        rows, txn_ids = await timeline.paginate(
            conn,
            room_id,
            reader=(requester.user_id, requester.device_id) if requester.device_id else None,
            lower=lower,
            upper=upper,
            forward=forward,
            limit=need + 1,
            sql_filter=sql_filter,
            gaps=gaps,
        )
        page.more = len(rows) > need
        rows = rows[:need]
        if gaps:
            cut = next((i for i, r in enumerate(rows) if r.event_id in gaps), None)
            if cut is not None:
                # Backwards the hole lies before the event, forwards before it too: either
                # way the page stops short of it, and comes back to it once filled.
                page.gap, page.more = rows[cut].event_id, True
                rows = rows[:cut]
        if rows:
            last = position_of(cache, rows[-1])
            page.cursor = last if forward else gap_before(last)
        if event_filter is not None:
            rows = [r for r in rows if event_filter.matches(event_of(cache, r).pdu)]
        visible = await filter_visible(conn, cache, requester.user_id, rows)
        page.rows.extend(visible.rows)
        page.memberships.update(visible.memberships)
        page.txn_ids.update(txn_ids)
        if not page.more or len(page.rows) >= limit or page.gap is not None:
            break
    return page


async def _lazy_members(
    conn: Connection, cache: EventCache, rows: Sequence[EventRow]
) -> list[JsonDict]:
    """The member event of each sender of a page, for lazy-loading clients: as of the
    sender's latest event on it, so that one page reaching back before someone joined
    (or after they left) still explains every event."""
    latest: dict[str, tuple[int, int]] = {}
    for row in rows:
        sender = event_of(cache, row).sender
        if row.state_group is None or row.stream_ordering is None:
            continue
        if sender not in latest or latest[sender][0] < row.stream_ordering:
            latest[sender] = (row.stream_ordering, row.state_group)
    keys = [(MEMBER, sender) for sender in sorted(latest)]
    found = await state_entries(conn, cache, {group for _, group in latest.values()}, keys)
    ids = {
        event_id
        for sender, (_, group) in latest.items()
        if (event_id := found.get(group, {}).get((MEMBER, sender))) is not None
    }
    return await format_events(conn, cache, sorted(ids))


async def _range(
    conn: Connection,
    room_id: str,
    access: RoomAccess,
    start_token: Token | None,
    end_token: Token | None,
    forward: bool,
) -> tuple[Position, Position | None]:
    """Where a /messages page starts, and the bound it must not pass."""
    if start_token is not None:
        start = await resolve(conn, room_id, start_token)
    elif forward:
        start = START
    else:
        start = access.upper or await timeline.latest_position(conn, room_id) or START
    bound = await resolve(conn, room_id, end_token) if end_token is not None else None
    if access.upper is not None:
        if forward:
            bound = access.upper if bound is None else min(bound, access.upper)
        else:
            start = min(start, access.upper)
    return start, bound


async def _messages_answer(
    conn: Connection,
    cache: EventCache,
    requester: Requester,
    page: Page,
    event_filter: RoomEventFilter | None,
    from_token: str | None,
    start: Position,
) -> JsonDict:
    """The /messages body of a page read."""
    chunk = await format_events(
        conn,
        cache,
        [row.event_id for row in page.rows],
        user_id=requester.user_id,
        device_id=requester.device_id,
        rows={row.event_id: row for row in page.rows},
        memberships=page.memberships,
        txn_ids=page.txn_ids,
        aggregations=True,
    )
    members: list[JsonDict] = []
    if event_filter is not None and event_filter.lazy_load_members and page.rows:
        members = await _lazy_members(conn, cache, page.rows)
    response: JsonDict = {
        "chunk": keep_fields(chunk, event_filter),
        "start": from_token if from_token is not None else token_for(start),
    }
    if page.more:
        response["end"] = token_for(page.cursor)
    if members:
        response["state"] = keep_fields(members, event_filter)
    return response


async def _visible_event(
    conn: Connection, cache: EventCache, access: RoomAccess, event_id: str
) -> tuple[EventRow, str]:
    """The event and the user's membership at it, or 404 when unknown, elsewhere, not
    in the timeline or hidden by history visibility (all alike, so as not to leak)."""
    row = (await event_store.get_events(conn, [event_id])).get(event_id)
    if row is None or row.room_id != access.room_id or row.stream_ordering is None:
        raise not_found("Event not found")
    if row.rejected_reason is not None:
        raise not_found("Event not found")
    visible = await filter_visible(conn, cache, access.user_id, [row])
    if not visible.rows:
        raise not_found("Event not found")
    return row, visible.memberships[event_id]


async def context_state(
    conn: Connection,
    cache: EventCache,
    group: int | None,
    event_filter: RoomEventFilter | None,
    senders: set[str],
) -> list[JsonDict]:
    """The state of a group as `/context` returns it: with lazy loading, only the
    members among `senders`; filtered (but for `event_fields`) by the filter."""
    if group is None:
        return []
    ids = await state.get_state(conn, group)
    if event_filter is not None and event_filter.lazy_load_members:
        ids = {k: v for k, v in ids.items() if k[0] != "m.room.member" or k[1] in senders}
    rows = await event_store.get_events(conn, ids.values())
    if event_filter is not None:
        rows = {k: r for k, r in rows.items() if event_filter.matches(event_of(cache, r).pdu)}
    return await format_events(conn, cache, sorted(rows), rows=rows)


class MessageService:
    """Room history for clients; holes in it are backfilled from other servers."""

    def __init__(
        self, db: Database, replicas: Replicas, cache: EventCache, backfiller: Backfiller
    ) -> None:
        self.db = db
        self.replicas = replicas
        self.cache = cache
        self.backfiller = backfiller

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        direction: str | None,
        limit: str | None,
        filter_json: str | None,
    ) -> JsonDict:
        """`GET /rooms/{roomId}/messages`; holes the page reaches are filled from other
        servers, waiting at most the backfiller's `page_wait` seconds in all."""
        forward = parse_direction(direction, default="b")
        count = parse_limit(limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        event_filter = parse_event_filter(filter_json)
        start_token = parse_token(from_token) if from_token is not None else None
        end_token = parse_token(to_token) if to_token is not None else None
        deadline = time.monotonic() + self.backfiller.page_wait
        start: Position | None = None
        bound: Position | None = None
        attempts = 0
        while True:
            # A replica serves a page from a token it has replayed; after a backfill,
            # what it wrote is read on the primary.
            source = self.db.pool if attempts else self._source(start_token)
            async with source.connection() as conn:
                if start is None:
                    access = await room_access(conn, self.cache, requester.user_id, room_id)
                    start, bound = await _range(
                        conn, room_id, access, start_token, end_token, forward
                    )
                page = await read_page(
                    conn,
                    self.cache,
                    requester,
                    room_id,
                    cursor=start,
                    bound=bound,
                    forward=forward,
                    limit=count,
                    event_filter=event_filter,
                    stop_at_gaps=True,
                )
                wait = deadline - time.monotonic()
                if page.gap is None or wait <= 0 or attempts >= MAX_BACKFILLS:
                    return await _messages_answer(
                        conn, self.cache, requester, page, event_filter, from_token, start
                    )
            attempts += 1
            await self.backfiller.fill_gap(room_id, page.gap, wait)

    def _source(self, token: Token | None) -> Pool:
        """A replica that has replayed the position of the client's token, if any."""
        if token is None:
            return self.db.pool
        position = token.position.stream if token.position is not None else token.stream
        assert position is not None
        return self.replicas.pool_for("events", position)

    async def get_event(self, requester: Requester, room_id: str, event_id: str) -> JsonDict:
        """`GET /rooms/{roomId}/event/{eventId}`: like /context, no position, so on a
        replica at most 2 s behind; one that lacks the event or the user's access to
        it answers 404 and the primary decides."""
        return await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._get_event(conn, requester, room_id, event_id),
        )

    async def _get_event(
        self, conn: Connection, requester: Requester, room_id: str, event_id: str
    ) -> JsonDict:
        access = await event_room_access(conn, self.cache, requester.user_id, room_id)
        row, membership = await _visible_event(conn, self.cache, access, event_id)
        [event] = await format_events(
            conn,
            self.cache,
            [event_id],
            user_id=requester.user_id,
            device_id=requester.device_id,
            rows={event_id: row},
            memberships={event_id: membership},
            aggregations=True,
        )
        return event

    async def context(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        *,
        limit: str | None,
        filter_json: str | None,
    ) -> JsonDict:
        """`GET /rooms/{roomId}/context/{eventId}`: the event, up to limit/2 events before
        it and the rest after it, and the state at the last event returned."""
        count = parse_limit(limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        event_filter = parse_event_filter(filter_json)
        # The request carries no position: a replica at most 2 s behind answers. One
        # that has not replayed the event, or the user's join, refuses; the primary
        # then decides (events after a leave or ban come after it in the WAL, so a
        # replica that misses the leave misses them too).
        return await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._context(conn, requester, room_id, event_id, count, event_filter),
        )

    async def _context(
        self,
        conn: Connection,
        requester: Requester,
        room_id: str,
        event_id: str,
        count: int,
        event_filter: RoomEventFilter | None,
    ) -> JsonDict:
        user_id = requester.user_id
        access = await event_room_access(conn, self.cache, user_id, room_id)
        row, membership = await _visible_event(conn, self.cache, access, event_id)
        position = position_of(self.cache, row)
        before = await read_page(
            conn,
            self.cache,
            requester,
            room_id,
            cursor=gap_before(position),
            bound=None,
            forward=False,
            limit=count // 2,
            event_filter=event_filter,
        )
        after = await read_page(
            conn,
            self.cache,
            requester,
            room_id,
            cursor=position,
            bound=access.upper,
            forward=True,
            limit=count - count // 2,
            event_filter=event_filter,
        )
        rows = {r.event_id: r for r in [row, *before.rows, *after.rows]}
        formatted = await format_events(
            conn,
            self.cache,
            list(rows),
            user_id=user_id,
            device_id=requester.device_id,
            rows=rows,
            memberships={event_id: membership, **before.memberships, **after.memberships},
            aggregations=True,
        )
        last = after.rows[-1] if after.rows else row
        senders = {event_of(self.cache, r).sender for r in rows.values()}
        state_events = await context_state(
            conn, self.cache, last.state_group, event_filter, senders
        )
        n_before = len(before.rows)
        formatted = keep_fields(formatted, event_filter)
        return {
            "event": formatted[0],
            "events_before": formatted[1 : 1 + n_before],
            "events_after": formatted[1 + n_before :],
            "state": keep_fields(state_events, event_filter),
            "start": token_for(before.cursor),
            "end": token_for(after.cursor),
        }

    async def timestamp_to_event(
        self,
        requester: Requester,
        room_id: str,
        *,
        ts: str | None,
        direction: str | None,
    ) -> JsonDict:
        """`GET /v1/rooms/{roomId}/timestamp_to_event`: the closest visible event at or
        after (`f`) or at or before (`b`) a time. Where our history may not cover the
        time (nothing found here, or a hole just before the event found going
        forwards), the room's other servers are asked, and a closer event of theirs is
        fetched into our timeline (so that /context works on it) and answered."""
        if direction is None:
            raise ServiceError(400, "M_MISSING_PARAM", "dir is required")
        forward = parse_direction(direction)
        if ts is None:
            raise ServiceError(400, "M_MISSING_PARAM", "ts is required")
        if not ts.isascii() or not ts.isdigit() or len(ts) > 18:
            raise invalid_param("ts must be a timestamp in milliseconds")
        at = int(ts)
        local, hole = await self._closest_local(requester, room_id, at, forward)
        if local is None or hole:
            found = await self.backfiller.closest_remote(room_id, at, forward=forward)
            closer = found is not None and (
                local is None or abs(found[2] - at) < abs(local.origin_server_ts - at)
            )
            if found is not None and closer:
                server, event_id, _ = found
                if await self.backfiller.fetch_event(server, room_id, event_id):
                    local, _ = await self._closest_local(requester, room_id, at, forward)
        if local is None:
            raise not_found("No event found near that time")
        return {"event_id": local.event_id, "origin_server_ts": local.origin_server_ts}

    async def _closest_local(
        self, requester: Requester, room_id: str, at: int, forward: bool
    ) -> tuple[Event | None, bool]:
        """Our closest visible event, and whether history is missing just before it."""
        async with self.db.pool.connection() as conn:
            access = await room_access(conn, self.cache, requester.user_id, room_id)
            rows = await timeline.events_near_timestamp(
                conn,
                room_id,
                at,
                forward=forward,
                upper=access.upper,
                limit=TIMESTAMP_CANDIDATES,
            )
            visible = await filter_visible(conn, self.cache, requester.user_id, rows)
            if not visible.rows:
                return None, False
            event = event_of(self.cache, visible.rows[0])
            hole = forward and bool(await backfill_store.due_gap_prevs(conn, event.event_id, 1))
        return event, hole
