"""The `rooms` part of a sync response, built for all the rooms of one sync at once.

`services/sync/sync.py` decides which rooms a sync covers and how (a `RoomPlan` each);
this module reads their timelines, summaries and stripped state with a fixed
number of batched queries (storage/sync/sync.py) and renders them. The state sent with
each timeline (`state` or `state_after`) is `services/sync/state.py`'s.

Events are rendered in the client format, or as stored PDUs when the filter asks
for `event_format: federation`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from federation.events import MEMBER, Event
from federation.types import JsonDict
from homeserver.services.accounts.filters import Filter, RoomEventFilter
from homeserver.services.core.clock import now_ms
from homeserver.services.rooms.event_cache import EventCache, load_event, state_entries
from homeserver.services.sync.state import LazyMembers, RoomPlan, RoomStates, TimelineRoom
from homeserver.services.sync.tokens import SyncToken
from homeserver.services.timeline.format import client_event, federation_event
from homeserver.services.timeline.messages import sql_filter_for
from homeserver.services.timeline.pagination import gap_before, token_for
from homeserver.services.timeline.visibility import filter_visible, ignored_senders, is_ignored
from homeserver.storage.core.pool import Connection, Pool
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import invite_state
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.rooms.state import StateKey
from homeserver.storage.sync import sync as sync_store
from homeserver.storage.timeline.timeline import Position

DEFAULT_TIMELINE_LIMIT = 10
# Timelines of this many rooms are read per statement; more rooms are read over
# several pooled connections at once (at most PARALLEL_READS).
ROOMS_PER_READ = 250
PARALLEL_READS = 4
MAX_TIMELINE_LIMIT = 1000

# What an invite or knock shows of a room the user is not in (stripped state).
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


class Rendered:
    """Client events as rendered, minus `unsigned`, by event id: an event's client
    form never changes unless it is redacted, which callers check first."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._items: OrderedDict[str, JsonDict] = OrderedDict()

    def get(self, event_id: str) -> JsonDict | None:
        item = self._items.get(event_id)
        if item is not None:
            self._items.move_to_end(event_id)
        return item

    def put(self, event_id: str, rendered: JsonDict) -> None:
        self._items[event_id] = rendered
        if len(self._items) > self._size:
            self._items.popitem(last=False)


def timeline_limit(room_filter: RoomEventFilter) -> int:
    if room_filter.limit is None:
        return DEFAULT_TIMELINE_LIMIT
    return min(room_filter.limit, MAX_TIMELINE_LIMIT)


def stripped(event: Event) -> JsonDict:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": dict(event.content),
        "sender": event.sender,
    }


@dataclass(frozen=True, slots=True)
class ReadAhead:
    """What a caller already read of `render_events`' lookups, in round trips of its
    own: the redactions among the state events `checked`, and the device's
    transaction ids of the timeline events `own`."""

    checked: frozenset[str]
    redacted: Mapping[str, str]
    own: frozenset[str]
    txn_ids: Mapping[str, str]


class RoomsBuilder:
    """Renders the rooms of one sync response."""

    def __init__(
        self,
        conn: Connection,
        cache: EventCache,
        lazy: LazyMembers,
        rendered: Rendered,
        *,
        user_id: str,
        device_id: str,
        sync_filter: Filter,
        now: SyncToken,
        state_after: bool = False,
        ignored: frozenset[str] | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.conn = conn
        # Lends more connections for reads that do not depend on each other: a large
        # sync then waits on several database backends working at once, not on a
        # series of round trips, each behind the other (`_side`).
        self.pool = pool
        self.cache = cache
        self.lazy = lazy
        self.rendered = rendered
        self.user_id = user_id
        self.device_id = device_id
        self.filter = sync_filter
        self.now = now
        self.state_after = state_after
        # The user's ignore list when the caller has it already (else read when needed).
        self.ignored = ignored
        self.state_section = "state_after" if state_after else "state"
        self.now_ms = now_ms()
        # The user's membership at each timeline event (MSC4115's unsigned.membership).
        self.memberships: dict[str, str] = {}

    # -- reading ---------------------------------------------------------------

    @asynccontextmanager
    async def _lent(self, rooms: int) -> AsyncIterator[Connection]:
        """For a read over this many rooms, a connection of its own from the pool if
        the sync is large and one is free at once, else ours (psycopg runs statements
        on one connection in turn). Small syncs borrow nothing: a connection opened
        for them would cost more than it saves."""
        if self.pool is None or rooms <= ROOMS_PER_READ or not self.pool.can_lend():
            yield self.conn
            return
        async with self.pool.connection() as conn:
            yield conn

    async def _recent_events(
        self, windows: Sequence[tuple[str, int, int]], limit: int
    ) -> dict[str, list[EventRow]]:
        """`recent_events` of many rooms, in slices read at once when a pool lends
        connections: the rows are what a large sync spends most waiting on."""
        sql_filter = sql_filter_for(self.filter.room.timeline)
        if self.pool is None or len(windows) <= ROOMS_PER_READ:
            return await sync_store.recent_events(self.conn, windows, limit, sql_filter)
        size = max(ROOMS_PER_READ, -(-len(windows) // PARALLEL_READS))
        slices = [windows[i : i + size] for i in range(0, len(windows), size)]

        async def one(part: Sequence[tuple[str, int, int]]) -> dict[str, list[EventRow]]:
            async with self._lent(len(windows)) as conn:
                return await sync_store.recent_events(conn, part, limit, sql_filter)

        found: dict[str, list[EventRow]] = {}
        for part in await asyncio.gather(*(one(w) for w in slices)):
            found.update(part)
        return found

    def _event(self, row: EventRow) -> Event:
        event = self.cache.get(row.event_id)
        if event is None:
            event = load_event(row)
            self.cache.put(event)
        return event

    async def timelines(
        self, plans: list[RoomPlan], read: Mapping[tuple[str, int, int], list[EventRow]]
    ) -> list[TimelineRoom]:
        """The timelines of these rooms as history visibility lets the user see them,
        without state: for callers that choose their own state (sliding sync). `read`:
        the rows of windows the caller has already read (`recent_events` with this
        filter, one more than its limit)."""
        rooms = [TimelineRoom(p) for p in plans]
        await self._timelines(rooms, read)
        return rooms

    async def _timelines(
        self,
        rooms: list[TimelineRoom],
        read: Mapping[tuple[str, int, int], list[EventRow]] | None = None,
    ) -> None:
        timeline_filter = self.filter.room.timeline
        limit = timeline_limit(timeline_filter)
        trivial = timeline_filter == RoomEventFilter(limit=timeline_filter.limit)
        windows = [(r.plan.room_id, r.plan.lower, r.plan.upper) for r in rooms]
        read = read or {}
        missing = [w for w in windows if w not in read]
        found = await self._recent_events(missing, limit + 1) if missing else {}
        found.update((w[0], read[w]) for w in windows if w in read)
        for room in rooms:
            rows = found.get(room.plan.room_id, [])
            room.limited = len(rows) > limit or room.plan.newly_joined
            events = [(self._event(row), row) for row in reversed(rows[:limit])]
            if trivial:
                room.timeline = events
            else:
                room.timeline = [(e, row) for e, row in events if timeline_filter.matches(e.pdu)]
        everything = (event for room in rooms for event, _ in room.timeline)
        ignored = self.ignored
        if ignored is None:
            ignored = await ignored_senders(self.conn, self.user_id, everything)
        if ignored:
            for room in rooms:
                room.timeline = [(e, row) for e, row in room.timeline if not is_ignored(e, ignored)]
        await self._apply_visibility(rooms)

    async def _apply_visibility(self, rooms: list[TimelineRoom]) -> None:
        """Drop the events history visibility hides from the user.

        A user whose current membership event precedes the timeline was in the room
        for all of it and sees everything; only rooms whose timeline starts before
        that event are judged, all in one batch.
        """
        suspects = [r for r in rooms if r.timeline and r.plan.membership_stream > r.start]
        await self._current_memberships([r for r in rooms if r not in suspects])
        if not suspects:
            return
        rows = [row for room in suspects for _, row in room.timeline]
        visible = await filter_visible(self.conn, self.cache, self.user_id, rows)
        self.memberships.update(visible.memberships)
        kept = {row.event_id for row in visible.rows}
        for room in suspects:
            room.timeline = [item for item in room.timeline if item[1].event_id in kept]

    async def _current_memberships(self, rooms: list[TimelineRoom]) -> None:
        """A timeline after the user's membership event is all at that membership."""
        left = [r.plan.membership_event_id for r in rooms if r.plan.section != "join"]
        found = await self._load(left) if left else {}
        for room in rooms:
            event = found.get(room.plan.membership_event_id)
            membership = "join" if room.plan.section == "join" else None
            membership = membership or (event.membership if event is not None else None)
            for _, row in room.timeline:
                self.memberships[row.event_id] = membership or "leave"

    async def _load(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        found: dict[str, Event] = {}
        missing = []
        for event_id in ids:
            event = self.cache.get(event_id)
            if event is None:
                missing.append(event_id)
            else:
                found[event_id] = event
        if missing:
            rows = await event_store.get_events(self.conn, missing)
            for event_id, row in rows.items():
                found[event_id] = self._event(row)
        return found

    async def _summaries(self, rooms: list[TimelineRoom]) -> None:
        """Summaries for joined rooms the client starts from nothing in, or whose
        membership changed."""
        needed = [
            r
            for r in rooms
            if r.plan.section == "join"
            and (
                r.plan.full
                or any(e.type == MEMBER for e, _ in r.timeline)
                or any(k[0] == MEMBER for k in r.state)
            )
        ]
        summaries = await sync_store.room_summaries(
            self.conn, [r.plan.room_id for r in needed], self.user_id
        )
        for room in needed:
            room.summary = summaries.get(room.plan.room_id, sync_store.RoomSummary(0, 0, []))

    # -- rendering -------------------------------------------------------------

    async def render_events(
        self, rooms: list[TimelineRoom], ahead: ReadAhead | None = None
    ) -> dict[str, JsonDict]:
        """Client events (or PDUs, for `event_format: federation`) for every timeline
        and state event of these rooms, by id.

        Unredacted events are rendered once and kept (`Rendered`); only their
        `unsigned` is made per response. State events already rendered are not read
        again: one light query tells which of them were redacted since, unless the
        caller read that already (`ahead`).
        """
        rows: dict[str, EventRow] = {}
        for room in rooms:
            for _, row in room.timeline:
                rows[row.event_id] = row
        state_ids = {eid for room in rooms for eid in room.state.values() if eid not in rows}
        federation = self.filter.event_format == "federation"
        known = (
            set()
            if federation
            else {eid for eid in state_ids if self.rendered.get(eid) is not None}
        )
        own = [
            row.event_id
            for room in rooms
            for event, row in room.timeline
            if event.sender == self.user_id
        ]
        state_rows, known_redacted, txn_ids = await self._render_lookups(
            len(rooms), state_ids - known, known, own, ahead
        )
        rows.update(state_rows)
        redacted_by = {eid: row.redacted_by for eid, row in rows.items() if row.redacted_by}
        redacted_by.update(known_redacted)
        redactions: dict[str, JsonDict] = {}
        if redacted_by:
            redaction_rows = await event_store.get_events(self.conn, set(redacted_by.values()))
            for rid, row in redaction_rows.items():
                redactions[rid] = client_event(self._event(row), now_ms=self.now_ms)
        redacted_events = await self._load(eid for eid in redacted_by if eid not in rows)
        for eid, row in rows.items():
            if eid in redacted_by:
                redacted_events[eid] = self._event(row)
        out: dict[str, JsonDict] = {}
        now = self.now_ms
        for event_id in rows.keys() | known:
            if event_id in redacted_by:
                event = redacted_events.get(event_id)
                if event is None:
                    continue
                rendered = client_event(
                    event,
                    redacted_because=redactions.get(redacted_by[event_id]),
                    transaction_id=txn_ids.get(event_id),
                    membership=self.memberships.get(event_id),
                    now_ms=now,
                )
                rendered.pop("room_id", None)
            else:
                base = self.rendered.get(event_id)
                if base is None:
                    base = client_event(self._event(rows[event_id]), now_ms=0)
                    del base["room_id"], base["unsigned"]
                    self.rendered.put(event_id, base)
                unsigned: JsonDict = {"age": max(0, now - base["origin_server_ts"])}
                txn_id = txn_ids.get(event_id)
                if txn_id is not None:
                    unsigned["transaction_id"] = txn_id
                membership = self.memberships.get(event_id)
                if membership is not None:
                    unsigned["membership"] = membership
                rendered = {**base, "unsigned": unsigned}
            if federation:
                redacted = event_id in redacted_by
                event = redacted_events[event_id] if redacted else self._event(rows[event_id])
                rendered = federation_event(event, rendered["unsigned"], redacted=redacted)
            out[event_id] = rendered
        return out

    async def _render_lookups(
        self,
        rooms: int,
        unread: set[str],
        known: set[str],
        own: list[str],
        ahead: ReadAhead | None,
    ) -> tuple[dict[str, EventRow], dict[str, str], dict[str, str]]:
        """What rendering of `rooms` rooms reads, all at once: the state events not
        rendered yet, which of those rendered were redacted since, and the device's
        transaction ids of its own timeline events; less what the caller read
        `ahead`, which is added to the answers."""
        found_redacted: dict[str, str] = {}
        found_txn_ids: dict[str, str] = {}
        if ahead is not None:
            found_redacted = {e: r for e, r in ahead.redacted.items() if e in known}
            found_txn_ids = dict(ahead.txn_ids)
            known = known.difference(ahead.checked)
            own = [e for e in own if e not in ahead.own]

        async def state_rows() -> dict[str, EventRow]:
            if not unread:
                return {}
            async with self._lent(rooms) as conn:
                return await event_store.get_events(conn, unread)

        async def redacted() -> dict[str, str]:
            if not known:
                return {}
            async with self._lent(rooms) as conn:
                return await sync_store.redactions_of(conn, known)

        async def txn_ids() -> dict[str, str]:
            if not own:
                return {}
            async with self._lent(rooms) as conn:
                return await event_store.txn_ids_for(conn, self.user_id, self.device_id, own)

        rows, more_redacted, more_txn_ids = await asyncio.gather(
            state_rows(), redacted(), txn_ids()
        )
        return rows, {**found_redacted, **more_redacted}, {**found_txn_ids, **more_txn_ids}

    async def build(
        self,
        plans: list[RoomPlan],
        room_extras: Mapping[str, JsonDict],
    ) -> JsonDict:
        """The `rooms` object. `room_extras` holds per-room `account_data` and
        `ephemeral` for joined rooms; a joined room with only extras still appears."""
        by_section: dict[str, JsonDict] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        timeline_rooms = [TimelineRoom(p) for p in plans if p.section in ("join", "leave")]
        await self._timelines(timeline_rooms)
        await self._summaries(timeline_rooms)
        room_states = RoomStates(
            self.conn,
            self.cache,
            self.lazy,
            user_id=self.user_id,
            device_id=self.device_id,
            after=self.state_after,
            include_redundant_members=self.filter.room.state.include_redundant_members,
        )
        await room_states.fill(timeline_rooms, self.filter.room.state.lazy_load_members)
        await self._summaries_after_state(timeline_rooms)
        rendered = await self.render_events(timeline_rooms)
        state_filter = self.filter.room.state
        trivial = state_filter == RoomEventFilter(
            lazy_load_members=state_filter.lazy_load_members,
            include_redundant_members=state_filter.include_redundant_members,
        )
        for room in timeline_rooms:
            room_id = room.plan.room_id
            state_events = [
                rendered[eid]
                for eid in room.state.values()
                if eid in rendered and (trivial or state_filter.matches(rendered[eid]))
            ]
            timeline = [rendered[row.event_id] for _, row in room.timeline]
            entry: JsonDict = {
                "timeline": {
                    "events": timeline,
                    "limited": room.limited,
                    "prev_batch": self.prev_batch(room),
                },
                self.state_section: {"events": state_events},
            }
            extras = room_extras.get(room_id, {})
            if room.plan.section == "join":
                entry["ephemeral"] = extras.get("ephemeral", {"events": []})
                entry["account_data"] = extras.get("account_data", {"events": []})
                entry["unread_notifications"] = {"highlight_count": 0, "notification_count": 0}
                if room.summary is not None:
                    entry["summary"] = {
                        "m.heroes": room.summary.heroes,
                        "m.joined_member_count": room.summary.joined,
                        "m.invited_member_count": room.summary.invited,
                    }
            else:
                entry["account_data"] = extras.get("account_data", {"events": []})
            by_section[room.plan.section][room_id] = entry
        for room_id, extras in room_extras.items():
            if room_id in by_section["join"] or room_id in by_section["leave"]:
                continue
            by_section["join"][room_id] = {
                "timeline": {"events": [], "limited": False},
                self.state_section: {"events": []},
                "ephemeral": extras.get("ephemeral", {"events": []}),
                "account_data": extras.get("account_data", {"events": []}),
                "unread_notifications": {"highlight_count": 0, "notification_count": 0},
            }
        stripped_plans = [p for p in plans if p.section in ("invite", "knock")]
        if stripped_plans:
            states = await self.stripped_states(stripped_plans)
            for plan in stripped_plans:
                key = "invite_state" if plan.section == "invite" else "knock_state"
                by_section[plan.section][plan.room_id] = {key: {"events": states[plan.room_id]}}
        return by_section

    def prev_batch(self, room: TimelineRoom) -> str:
        """Where /messages continues backwards: the gap before the timeline's first
        event, or the end of the window when the timeline is empty."""
        if room.timeline:
            event, row = room.timeline[0]
            assert row.stream_ordering is not None
            return token_for(gap_before(Position(event.depth, row.stream_ordering)))
        return str(self.now.with_(events=room.plan.upper))

    async def _summaries_after_state(self, rooms: list[TimelineRoom]) -> None:
        """A limited gap may hold membership changes: those rooms need a summary too."""
        missing = [
            r
            for r in rooms
            if r.summary is None
            and r.plan.section == "join"
            and any(k[0] == MEMBER for k in r.state)
        ]
        if missing:
            await self._summaries(missing)

    async def stripped_states(self, plans: list[RoomPlan]) -> dict[str, list[JsonDict]]:
        """Per invite or knock, the stripped state after its membership event."""
        membership_rows = await event_store.get_events(
            self.conn, [p.membership_event_id for p in plans]
        )
        groups: dict[str, int] = {}
        keys: set[StateKey] = {(t, "") for t in STRIPPED_STATE_TYPES}
        for plan in plans:
            row = membership_rows.get(plan.membership_event_id)
            if row is None or row.state_group is None:
                continue
            groups[plan.room_id] = row.state_group
            keys.add((MEMBER, self._event(row).sender))
            keys.add((MEMBER, self.user_id))
        found = await state_entries(self.conn, self.cache, groups.values(), keys)
        # Remote invites and knocks: no state here, only what the other server sent.
        given = await invite_state.for_events(
            self.conn, [p.membership_event_id for p in plans if p.room_id not in groups]
        )
        out: dict[str, list[JsonDict]] = {}
        wanted_ids: set[str] = set()
        for plan in plans:
            group = groups.get(plan.room_id)
            state = found.get(group, {}) if group is not None else {}
            wanted_ids.update(state.values())
            wanted_ids.add(plan.membership_event_id)
        events = await self._load(wanted_ids)
        for plan in plans:
            group = groups.get(plan.room_id)
            state = found.get(group, {}) if group is not None else {}
            membership = events.get(plan.membership_event_id)
            inviter = membership.sender if membership is not None else None
            items = [
                item
                for item in given.get(plan.membership_event_id, [])
                if (item.get("type"), item.get("state_key")) != (MEMBER, self.user_id)
            ]
            for (event_type, state_key), event_id in sorted(state.items()):
                if event_type == MEMBER and state_key not in (inviter, self.user_id):
                    continue
                if event_type == MEMBER and state_key == self.user_id:
                    continue  # the membership event itself is added below, as it is now
                event = events.get(event_id)
                if event is not None:
                    items.append(stripped(event))
            if membership is not None:
                items.append(stripped(membership))
            out[plan.room_id] = items
        return out
