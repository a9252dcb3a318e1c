"""Creating local events: build, hash, sign, authorise against current state, persist.

Writes to one room are serialised (an asyncio lock in this process, a PostgreSQL
advisory lock across processes); different rooms write in parallel. Everything an
event changes (its row and edges, forward extremities, state group, current state,
membership, stream position) is written in one transaction. A `RoomWriter` may
append several events in that transaction, which is how a new room's initial
events share a single commit; a `RoomGroup` holds writers of several rooms in one
transaction, which is how sends into different rooms share a commit.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from federation.auth_rules import AuthError, auth_types_for, check_auth
from federation.builder import build_event
from federation.events import CREATE_KEY, Event
from federation.hashing import event_reference
from federation.keys import SigningKey
from federation.room_versions import EventIdFormat, RoomVersion, get_room_version
from homeserver import metrics
from homeserver.services.core import clock
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.notifier import Announcement, Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.e2ee.device_lists import record_membership
from homeserver.services.rooms.event_cache import EventCache, load_events, state_entries
from homeserver.services.rooms.event_records import check_limits, event_record
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database, pipelined_transaction
from homeserver.storage.push.pushers import PusherKey
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, rooms, state
from homeserver.storage.rooms.events import TxnKey
from homeserver.storage.rooms.state import StateKey

MAX_PREV_EVENTS = 10

# Tries at a v12 room id not taken by another process's creation in the same millisecond.
CREATE_ATTEMPTS = 5


class EventNotAllowed(Exception):
    """The auth rules reject the event; the message says why."""


class _RoomIdTaken(Exception):
    """A new room's id is another room's already (v12 ids are create events' hashes)."""


class UnknownRoom(Exception):
    pass


@dataclass(frozen=True, slots=True)
class PersistedEvent:
    event: Event
    stream_ordering: int


def _members_changed(writer: RoomWriter) -> list[str]:
    """The users whose member events the writer wrote."""
    return [
        p.event.state_key
        for p in writer.persisted
        if p.event.type == "m.room.member" and p.event.state_key
    ]


@dataclass
class RoomWriter:
    """Appends local events to one room inside one open, locked transaction."""

    conn: Connection
    cache: EventCache
    signing_key: SigningKey
    allocator: StreamAllocator
    room_id: str
    room_version: RoomVersion
    state_group: int | None
    extremities: list[tuple[str, int]]
    persisted: list[PersistedEvent] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    # 'device_lists' positions of members who started or stopped being joined
    device_list_positions: list[int] = field(default_factory=list)
    # local users the new events notify (push actions stored): push delivery wakes them,
    # and, when a room row notified most of the room, the room's members
    notified_users: set[str] = field(default_factory=set)
    notified_room: bool = False
    # the pushers of those users, asked in the transaction: read once it committed
    notified_pushers: Callable[[], Awaitable[list[PusherKey]]] | None = None
    # servers the new events were queued for (federation outbox): woken after the commit
    queued_destinations: set[str] = field(default_factory=set)
    # the group's writes that need no answer (one list for all its writers): made by the
    # transaction's last statement (the announcement's), not each by one of its own
    last_writes: list[streams.Write] = field(default_factory=list)
    # What the transaction changed, for caches of room facts (push evaluation): the
    # state group it started from, the state keys it changed, and the memberships it
    # wrote, in order, as (user id, membership, display name, stream position)
    start_state_group: int | None = field(default=None, init=False)
    changed_state: set[StateKey] = field(default_factory=set)
    membership_changes: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    # positions reserved for events about to be written, and the newest one given out
    spare_positions: list[int] = field(default_factory=list)
    latest_position: int = 0
    # state group after each event this transaction wrote or looked up (a forked room's
    # tips are compared by group event after event)
    groups_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start_state_group = self.state_group

    async def reserve_positions(self, count: int) -> None:
        """Allocate positions for `count` events in one round trip; those left unused
        are finished empty with the transaction (a gap readers step over)."""
        reserved = await self.allocator.allocate("events", count)
        self.positions.extend(reserved)
        self.spare_positions.extend(reserved)

    async def next_position(self) -> int:
        """The stream position of the next event written, reserved or allocated now."""
        if self.spare_positions:
            position = self.spare_positions.pop(0)
        else:
            [position] = await self.allocator.allocate("events")
            self.positions.append(position)
        self.latest_position = position
        return position

    async def _auth_state(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Event]:
        """The current state's events for `keys`. Current state is the room's current
        state group, which never changes once written: its entries come from the
        cache, so a busy room's messages do not read the same rows again and again."""
        wanted = keys | {CREATE_KEY}
        group = self.state_group
        if group is None:
            ids = await state.get_current_state(self.conn, self.room_id, wanted)
        else:
            ids = (await state_entries(self.conn, self.cache, [group], wanted))[group]
        found = await load_events(self.conn, self.cache, ids.values())
        return {key: found[eid] for key, eid in ids.items() if eid in found}

    async def unchanged(
        self, event_type: str, state_key: str, sender: str, content: Mapping[str, Any]
    ) -> str | None:
        """The id of the current state event that this one would merely repeat (same
        sender and content): sending it again changes nothing, so it is not sent."""
        ids = await state.get_current_state(self.conn, self.room_id, [(event_type, state_key)])
        event_id = ids.get((event_type, state_key))
        if event_id is None:
            return None
        current = (await load_events(self.conn, self.cache, [event_id])).get(event_id)
        if current is None or current.sender != sender:
            return None
        same = orjson.dumps(current.content, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            content, option=orjson.OPT_SORT_KEYS
        )
        return event_id if same else None

    async def append(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        now_ms: int | None = None,
        txn: TxnKey | None = None,
    ) -> PersistedEvent:
        event, prev_ids, new_key = await self.prepare(
            event_type, sender, content, state_key=state_key, redacts=redacts, now_ms=now_ms
        )
        return await self.persist(event, prev_ids=prev_ids, new_key=new_key, txn=txn)

    async def prepare(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[Event, list[str], bool]:
        """Build, sign and authorise an event on current state without persisting it:
        (event, prev ids, whether its state key is new). An invite of a remote user
        must be co-signed by their server before it is persisted."""
        keys = auth_types_for(self.room_version, event_type, sender, state_key, content)
        lookup = set(keys)
        if state_key is not None:
            lookup.add((event_type, state_key))
        auth_state = await self._auth_state(lookup)
        prev = self.extremities[:MAX_PREV_EVENTS]
        prev_refs: list[Any] = [eid for eid, _ in prev]
        auth_refs: list[Any] = sorted(auth_state[k].event_id for k in keys if k in auth_state)
        if self.room_version.event_id_format is EventIdFormat.V1:
            # Rooms 1 and 2 cite events as [event id, hashes] pairs.
            cited = await load_events(self.conn, self.cache, prev_refs + auth_refs)
            prev_refs = [event_reference(cited[eid]) for eid in prev_refs]
            auth_refs = [event_reference(cited[eid]) for eid in auth_refs]
        event = build_event(
            self.room_version,
            self.signing_key,
            event_type=event_type,
            sender=sender,
            content=content,
            prev_events=prev_refs,
            auth_events=auth_refs,
            depth=max((d for _, d in prev), default=0) + 1,
            origin_server_ts=now_ms if now_ms is not None else clock.now_ms(),
            room_id=self.room_id,
            state_key=state_key,
            redacts=redacts,
        )
        check_limits(event)
        try:
            check_auth(event, auth_state)
        except AuthError as exc:
            raise EventNotAllowed(str(exc)) from None
        replaced = event.state_tuple in auth_state if event.is_state else False
        return event, [eid for eid, _ in prev], not replaced

    async def set_membership(self, event: Event, stream_ordering: int) -> None:
        """Record a member event that became current state (device lists follow joins)."""
        if event.type != "m.room.member" or event.membership is None:
            return
        assert event.state_key is not None
        moved = await record_membership(
            self.conn, self.allocator, self.room_id, event.state_key, event.membership
        )
        if moved is not None:
            self.device_list_positions.append(moved)
        name = event.content.get("displayname")
        avatar = event.content.get("avatar_url")
        self.membership_changes.append(
            (
                event.state_key,
                event.membership,
                name if isinstance(name, str) else None,
                stream_ordering,
            )
        )
        await memberships.upsert_membership(
            self.conn,
            memberships.MembershipRow(
                room_id=self.room_id,
                user_id=event.state_key,
                membership=event.membership,
                event_id=event.event_id,
                sender=event.sender,
                stream_ordering=stream_ordering,
                displayname=name if isinstance(name, str) else None,
                avatar_url=avatar if isinstance(avatar, str) else None,
            ),
        )

    async def persist(
        self, event: Event, *, prev_ids: list[str], new_key: bool, txn: TxnKey | None = None
    ) -> PersistedEvent:
        """Write an event already built and authorised for this room's current state;
        `txn`, the client's transaction id of a send, goes in the same statement."""
        conn = self.conn
        stream_ordering = await self.next_position()
        if event.is_state:
            delta = {event.state_tuple: event.event_id}
            self.state_group = await state.create_group(
                conn, self.room_id, self.state_group, delta, 1 if new_key else 0
            )
            await state.set_current_state(conn, self.room_id, delta)
            await rooms.set_current_state_group(conn, self.room_id, self.state_group)
            self.changed_state.add(event.state_tuple)
            await self.set_membership(event, stream_ordering)
        await event_store.insert_new_extremity(
            conn,
            event_record(event),
            stream_ordering=stream_ordering,
            state_group=self.state_group,
            replaced=prev_ids,
            txn=txn,
        )
        self.extremities = [(event.event_id, event.depth)] + [
            (eid, d) for eid, d in self.extremities if eid not in prev_ids
        ]
        self.cache.put(event)
        persisted = PersistedEvent(event, stream_ordering)
        self.persisted.append(persisted)
        return persisted


T = TypeVar("T")
Queue = Callable[[Connection], Awaitable[T]]
BeforeCommit = Callable[[RoomWriter], Awaitable[None]]
BeforeGroupCommit = Callable[[list[RoomWriter]], Awaitable[None]]
AfterCommit = Callable[[RoomWriter], None]


@dataclass
class RoomGroup:
    """Writers of several rooms sharing one transaction and one commit: what a batch of
    sends into different rooms is written with. Rooms that do not exist have no writer."""

    conn: Connection
    writers: dict[str, RoomWriter] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)
    # positions reserved for any room of the group, given out in order
    spare_positions: list[int] = field(default_factory=list)
    last_writes: list[streams.Write] = field(default_factory=list)
    announcement: Announcement | None = None


def _device_lists(group: RoomGroup) -> list[int]:
    return [n for w in group.writers.values() for n in w.device_list_positions]


class EventWriter:
    """Owns the per-room write locks and hands out `RoomWriter`s."""

    def __init__(
        self,
        db: Database,
        signing_key: SigningKey,
        cache: EventCache,
        allocator: StreamAllocator,
        notifier: Notifier,
    ) -> None:
        self.db = db
        self.signing_key = signing_key
        self.cache = cache
        self.allocator = allocator
        self.notifier = notifier
        self._last_create_ts = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._before_commit: list[BeforeGroupCommit] = []
        self._after_commit: list[AfterCommit] = []

    def add_before_commit(self, listener: BeforeCommit) -> None:
        """Call `listener` inside each transaction that wrote events, once they are all
        written, once per room: what it writes on `writer.conn` commits (or not) with them."""

        async def each(writers: list[RoomWriter]) -> None:
            for writer in writers:
                await listener(writer)

        self._before_commit.append(each)

    def add_before_group_commit(self, listener: BeforeGroupCommit) -> None:
        """As `add_before_commit`, once per transaction with the writers of all its rooms
        that wrote events: for listeners that read once for the group rather than once
        per room (each read is a round trip with the rooms' locks held)."""
        self._before_commit.append(listener)

    def add_after_commit(self, listener: AfterCommit) -> None:
        """Call `listener` after each commit of events, once per room, in the rooms'
        locks: it only wakes work elsewhere (it cannot wait, so the room's next writer
        does not either)."""
        self._after_commit.append(listener)

    def busy(self, room_id: str) -> bool:
        """Whether a writer of this process holds the room (others would wait for it)."""
        lock = self._locks.get(room_id)
        return lock is not None and lock.locked()

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock

    async def _stage_announcement(self, group: RoomGroup) -> None:
        """Finish the positions and announce the events in their transaction's last
        statement: it rides the commit's round trip rather than taking one of its own.
        One announcement for the whole group, naming all its rooms."""
        finished = {"events": group.positions, "device_lists": _device_lists(group)}
        written = [w for w in group.writers.values() if w.persisted]
        if not written:
            for stream, positions in finished.items():
                if positions:
                    await streams.finish(group.conn, stream, positions)
            return
        group.announcement = await self.notifier.announce_at_commit(
            group.conn,
            "events",
            max(p.stream_ordering for w in written for p in w.persisted),
            rooms=[w.room_id for w in written],
            users=[u for w in written for u in _members_changed(w)],
            finished=finished,
            writes=group.last_writes,
        )

    async def _announce(self, writers: list[RoomWriter], announcement: Announcement | None) -> None:
        """Wake the syncs of the rooms' members, and of anyone whose membership changed."""
        if announcement is not None:
            await self.notifier.announced(announcement)
        device_lists = [n for w in writers for n in w.device_list_positions]
        if device_lists:
            written = [w for w in writers if w.persisted]
            await self.notifier.notify(
                "device_lists",
                max(device_lists),
                rooms=[w.room_id for w in written],
                users=[u for w in written for u in _members_changed(w)],
            )

    async def _committed(
        self, writers: list[RoomWriter], announcement: Announcement | None
    ) -> None:
        metrics.EVENTS_PERSISTED.inc(sum(len(w.persisted) for w in writers))
        await self._announce(writers, announcement)
        for writer in writers:
            if writer.persisted:
                for listener in self._after_commit:
                    listener(writer)

    @asynccontextmanager
    async def _transaction(
        self, room_ids: list[str], committing: Callable[[], None] | None = None
    ) -> AsyncIterator[RoomGroup]:
        """The rooms' locks and one database transaction; after-commit work once done.

        Locks are taken in room id order, so groups of rooms cannot deadlock each
        other. The connection goes back to the pool before the after-commit work,
        which needs connections of its own; the locks keep the rooms' order meanwhile.
        Pipeline mode sends the statements that return nothing without waiting, so the
        locks are held for fewer round trips.
        """
        ordered = sorted(set(room_ids))
        async with AsyncExitStack() as locks:
            for room_id in ordered:
                await locks.enter_async_context(self._lock(room_id))
            async with self.db.pool.connection() as conn:
                group = RoomGroup(conn)
                try:
                    async with pipelined_transaction(conn):
                        await rooms.lock_rooms(conn, ordered)
                        yield group
                        await self._before_commit_all(group)
                        await self._stage_announcement(group)
                        if committing is not None:
                            committing()
                except BaseException:
                    # Positions of a transaction that did not commit must not hold readers back.
                    await self.allocator.abandon("events", group.positions)
                    await self.allocator.abandon("device_lists", _device_lists(group))
                    raise
                if group.announcement is not None:
                    await group.announcement.read()
            await self._committed(list(group.writers.values()), group.announcement)

    async def _before_commit_all(self, group: RoomGroup) -> None:
        """The listeners for each room that wrote events."""
        written = [w for w in group.writers.values() if w.persisted]
        if written:
            for listener in self._before_commit:
                await listener(written)

    def _writer(
        self,
        group: RoomGroup,
        room_id: str,
        room_version: RoomVersion,
        state_group: int | None,
        extremities: list[tuple[str, int]],
    ) -> RoomWriter:
        writer = RoomWriter(
            conn=group.conn,
            cache=self.cache,
            signing_key=self.signing_key,
            allocator=self.allocator,
            room_id=room_id,
            room_version=room_version,
            state_group=state_group,
            extremities=extremities,
            positions=group.positions,
            spare_positions=group.spare_positions,
            last_writes=group.last_writes,
        )
        group.writers[room_id] = writer
        return writer

    @asynccontextmanager
    async def writer(
        self, room_id: str, *, create: tuple[RoomVersion, str] | None = None
    ) -> AsyncIterator[RoomWriter]:
        """A writer for an existing room; commits when the block exits cleanly.

        With `create` (room version, creator) an unknown room gets its row first: how a
        room joined or invited to over federation starts to exist here."""
        async with self._transaction([room_id]) as group:
            conn = group.conn
            found = (await rooms.get_rooms_and_extremities(conn, [room_id])).get(room_id)
            if found is None and create is not None:
                version, creator = create
                now = clock.now_ms()
                await rooms.insert_room(conn, room_id, version.identifier, creator, now)
                found = (await rooms.get_rooms_and_extremities(conn, [room_id])).get(room_id)
            if found is None:
                raise UnknownRoom(room_id)
            room, extremities = found
            yield self._writer(
                group,
                room_id,
                get_room_version(room.room_version),
                room.current_state_group,
                extremities,
            )

    @asynccontextmanager
    async def writers(
        self, room_ids: list[str], first: Queue[T], *, committing: Callable[[], None] | None = None
    ) -> AsyncIterator[tuple[RoomGroup, T]]:
        """Writers for several existing rooms in one transaction and one commit (one
        wait for the disk); unknown rooms get no writer. `first` sends the caller's
        statements before the rooms are read (locks held), answered in that round trip.
        `committing` is called as the commit is sent (the locks held until it is done)."""
        async with self._transaction(room_ids, committing) as group:
            queued = await first(group.conn)
            found = await rooms.get_rooms_and_extremities(group.conn, room_ids)
            for room_id in room_ids:
                if room_id in found:
                    room, extremities = found[room_id]
                    version = get_room_version(room.room_version)
                    self._writer(group, room_id, version, room.current_state_group, extremities)
            yield group, queued

    @asynccontextmanager
    async def new_room(
        self,
        room_version: RoomVersion,
        creator: str,
        create_content: Mapping[str, Any],
        room_id: str | None = None,
    ) -> AsyncIterator[RoomWriter]:
        """A writer for a room created by this block: the create event is already in.

        `room_id` is needed for room versions before 12; v12 derives it from the
        create event.
        """
        # In v12 the room id is the create event's hash: two identical creations in the
        # same millisecond would collide, so each one here gets its own timestamp, and
        # one that meets another process's room (same creator, same millisecond) takes
        # the next millisecond.
        for _ in range(CREATE_ATTEMPTS):
            now_ms = max(clock.now_ms(), self._last_create_ts + 1)
            self._last_create_ts = now_ms
            create = self._create_event(room_version, creator, create_content, room_id, now_ms)
            new_room_id = create.room_id
            try:
                async with self._transaction([new_room_id]) as group:
                    made = await rooms.insert_room(
                        group.conn, new_room_id, room_version.identifier, creator, now_ms
                    )
                    if not made:
                        raise _RoomIdTaken
                    writer = self._writer(group, new_room_id, room_version, None, [])
                    await writer.persist(create, prev_ids=[], new_key=True)
                    yield writer
                return
            except _RoomIdTaken:
                if not room_version.room_id_from_create_event:
                    raise ServiceError(409, "M_UNKNOWN", "room id already in use") from None
        raise ServiceError(503, "M_UNKNOWN", "could not find a free room id")

    def _create_event(
        self,
        room_version: RoomVersion,
        creator: str,
        create_content: Mapping[str, Any],
        room_id: str | None,
        now_ms: int,
    ) -> Event:
        """The room's create event, authorised against no state."""
        create = build_event(
            room_version,
            self.signing_key,
            event_type="m.room.create",
            sender=creator,
            content=create_content,
            prev_events=[],
            auth_events=[],
            depth=1,
            origin_server_ts=now_ms,
            room_id=None if room_version.room_id_from_create_event else room_id,
            state_key="",
        )
        check_limits(create)
        try:
            check_auth(create, {})
        except AuthError as exc:
            raise EventNotAllowed(str(exc)) from None
        return create
