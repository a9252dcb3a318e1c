"""Notifications: push rules evaluated for each event a room gets, unread counts for
sync, and the /notifications list.

Evaluation runs inside the transaction that persists the events (local sends and
events from other servers alike, through `EventWriter.add_before_commit`), so the
counts a sync reads always match the events it sees. It must stay cheap there: the
room's joined members with their display names, and its power levels, are cached
per room and brought forward by each transaction's own membership changes (one
entry per change; the state group tells when another process wrote meanwhile, and
the room is read afresh); users are evaluated by groups sharing one compiled rule
set (most users keep the server defaults), the user-independent conditions once per
group and event; and the rows of a commit go to the database in one statement per
table. The members an event notifies plainly are most of a big room: they are stored
as one row for the room (naming the members it leaves out) rather than one each, so
a message costs the database about the same in a room of ten or of ten thousand.

The rows do not stay forever: a background task (`prune`) deletes those read and
older than `push.retention_days`, and all older than `push.unread_retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from federation.events import CREATE_KEY, MEMBER, POWER_LEVELS_KEY, Event
from federation.identifiers import domain_of
from federation.power_levels import user_level
from homeserver.services.core import clock
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.notifier import Notifier
from homeserver.services.push.defaults import localpart_of
from homeserver.services.push.evaluator import Outcome, RoomFacts, SharedRules
from homeserver.services.push.members import Member
from homeserver.services.push.rules import PushRuleService
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.writer import RoomWriter
from homeserver.services.timeline.format import format_events
from homeserver.storage.accounts import account_data as account_data_store
from homeserver.storage.core.pool import Connection, Database, DatabaseError
from homeserver.storage.push import notifications as store
from homeserver.storage.push import pushers as pushers_store
from homeserver.storage.push import room_actions as room_store
from homeserver.storage.rooms import state

log = logging.getLogger(__name__)

CACHED_ROOMS = 10_000
CACHED_SENDERS = 100_000
# Broadcast to the other processes when someone's ignore list changes.
IGNORES_KIND = "ignores_changed"
# Fewest members an event notifies plainly for them to share one room row.
ROOM_ROW_MIN = 2
PRUNE_FIRST_DELAY_S = 60.0
PRUNE_INTERVAL_S = 3600.0
MAIN_THREAD = store.MAIN_THREAD


@dataclass(frozen=True, slots=True)
class Recipients:
    """Members evaluated with one shared rule set, and their ids in the same order (an
    event that notifies them all stores these, without a pass over the members)."""

    rules: SharedRules
    members: list[Member]
    user_ids: list[str]


@dataclass(slots=True)
class RoomPushState:
    """What evaluation reads about a room, as of state group `group`.

    Kept up to date from the membership changes each transaction writes (one entry
    per change) rather than re-read: a transaction that starts from `group` applies
    its changes and moves `group` on. A transaction starting from any other group
    (another worker process wrote to the room meanwhile, or this entry was built
    before a transaction that failed) reads the room afresh: state group ids are
    never reused, so equal groups mean equal memberships.
    """

    group: int | None
    names: dict[str, str | None]  # joined members' display names
    members: dict[str, Member]  # the local ones among them
    create: Event | None
    power: Event | None
    # The local members grouped by shared rules, as of a push rules generation
    grouped: tuple[int, list[Recipients]] | None = None

    def apply(self, user_id: str, membership: str, name: str | None, server: str) -> None:
        """One membership change, as `room_memberships` records it."""
        self.grouped = None
        if membership != "join":
            self.names.pop(user_id, None)
            self.members.pop(user_id, None)
            return
        self.names[user_id] = name
        if domain_of(user_id) == server:
            self.members[user_id] = Member.of(user_id, localpart_of(user_id), name)

    def member(self, user_id: str) -> Member:
        found = self.members.get(user_id)
        if found is None:
            found = Member.of(user_id, localpart_of(user_id), self.names.get(user_id))
        return found

    def facts(self, sender_power: float) -> RoomFacts:
        """The room's facts; each member's display name comes from their `Member`."""
        levels = self.power.content.get("notifications") if self.power is not None else None
        return RoomFacts(
            member_count=len(self.names),
            sender_power=sender_power,
            notification_levels=levels if isinstance(levels, Mapping) else {},
        )


def thread_of(event: Event) -> str | None:
    """The thread an event counts in: its thread root's id, or None for the main timeline."""
    relates = event.content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str):
            return root
    return None


def notified_rooms(writer: RoomWriter) -> list[str]:
    """The room whose joined members a commit's room row notified, if it wrote one:
    push delivery looks up its members' pushers from the room."""
    return [writer.room_id] if writer.notified_room else []


def _ids_but(group: Recipients, matched: list[Member], sender: str) -> list[str]:
    """The ids of the `matched` members of the group but the sender's. Matched are a
    sub-list of the group's members: as many, they are all of them (most messages)."""
    if len(matched) != len(group.members):
        return [m.user_id for m in matched if m.user_id != sender]
    ids = list(group.user_ids)
    with contextlib.suppress(ValueError):
        ids.remove(sender)
    return ids


def _plain(group: store.PushActionGroup) -> bool:
    return group.actions is None and not group.highlight


def _room_row(
    room: RoomPushState, groups: Sequence[store.PushActionGroup], position: int
) -> room_store.RoomAction | None:
    """One row for the members the event notifies plainly, when they are at least
    `ROOM_ROW_MIN` and no fewer than the room's other local members (who are listed
    on the row as not notified by it); None to keep a row per member."""
    plain = [u for g in groups if _plain(g) for u in g.user_ids]
    others = len(room.members) - len(plain)
    if len(plain) < ROOM_ROW_MIN or others > len(plain):
        return None
    excluded = sorted(room.members.keys() - set(plain))
    thread = next(g.thread_id for g in groups if _plain(g))
    return room_store.RoomAction(position, thread, excluded)


class NotificationService:
    def __init__(
        self,
        db: Database,
        event_cache: EventCache,
        push_rules: PushRuleService,
        notifier: Notifier,
        server_name: str,
        *,
        retention_days: int,
        unread_retention_days: int,
    ) -> None:
        self.db = db
        self.event_cache = event_cache
        self.push_rules = push_rules
        self.server_name = server_name
        self.retention_days = retention_days
        self.unread_retention_days = unread_retention_days
        self._rooms: OrderedDict[str, RoomPushState] = OrderedDict()
        # The local users who ignore each sender (nearly always nobody), so that a
        # message does not read the ignore lists again. Dropped whole when anyone's
        # list changes, here and, by broadcast, in the other processes (as push rules
        # are); the generation keeps a read begun before a change out of the cache.
        self._ignorers: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._ignores_generation = 0
        notifier.on(IGNORES_KIND, self._on_ignores_broadcast)
        notifier.after_reconnect(self._forget_ignorers)
        self.notifier = notifier
        self._pruner: asyncio.Task[None] | None = None
        # Where the next prune starts: everything below was deleted by an earlier one.
        self._pruned_below: int | None = None

    # -- retention ---------------------------------------------------------------------

    async def start(self) -> None:
        self._pruner = asyncio.create_task(self._prune_forever(), name="push action retention")

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None

    async def _prune_forever(self) -> None:
        await asyncio.sleep(PRUNE_FIRST_DELAY_S)
        while True:
            try:
                await self.prune(clock.now_ms())
            except (DatabaseError, OSError):
                log.exception("pruning old push actions failed; trying again later")
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def prune(self, now_ms: int) -> int:
        """Delete push actions the user has read that are older than
        `push.retention_days`, and all older than `push.unread_retention_days`, so that
        the table does not grow forever; how many went.

        One process at a time (an advisory lock; the others skip the run). The rows are
        deleted window by window of stream positions, each its own short statement, so
        the send path's inserts never wait long. Unread counts stay right: they count
        only actions after the read receipt, which the first kind is not, and an action
        unread for that long is no longer counted.
        """
        day = 24 * 3600 * 1000
        deleted = 0
        async with self.db.pool.connection() as conn:
            if not await store.try_lock_retention(conn):
                return 0
            try:
                read_bound = await store.stream_position_before(
                    conn, now_ms - self.retention_days * day
                )
                all_bound = await store.stream_position_before(
                    conn, now_ms - self.unread_retention_days * day
                )
                start = self._pruned_below
                if start is None:
                    start = await store.first_stream_position(conn)
                while start <= read_bound:
                    end = start + store.RETENTION_WINDOW
                    deleted += await store.delete_old_actions(
                        conn, start, end, read_bound, all_bound
                    )
                    start = end
                self._pruned_below = all_bound + 1
            finally:
                await store.unlock_retention(conn)
        if deleted:
            log.info("deleted %d old push actions", deleted)
        return deleted

    async def _room_state(self, writer: RoomWriter) -> RoomPushState:
        """The room's push facts at the writer's state group: the cached entry brought
        forward by the transaction's own changes when it was at the group the
        transaction started from, else read afresh."""
        room_id, group = writer.room_id, writer.state_group
        cached = self._rooms.get(room_id)
        if cached is not None and group is not None:
            if cached.group == group:
                self._rooms.move_to_end(room_id)
                return cached
            if cached.group is not None and cached.group == writer.start_state_group:
                self._rooms.move_to_end(room_id)
                cached.group = None  # half-updated until done
                server = self.server_name
                for user_id, membership, name, _ in writer.membership_changes:
                    cached.apply(user_id, membership, name, server)
                if CREATE_KEY in writer.changed_state or POWER_LEVELS_KEY in writer.changed_state:
                    cached.create, cached.power = await self._create_and_power(writer)
                cached.group = group
                return cached
        self._rooms.pop(room_id, None)
        members = await store.joined_members_with_names(writer.conn, room_id)
        room = RoomPushState(group, {}, {}, *await self._create_and_power(writer))
        server = self.server_name
        for user_id, name in members:
            room.apply(user_id, "join", name, server)
        if group is not None:
            self._rooms[room_id] = room
            if len(self._rooms) > CACHED_ROOMS:
                self._rooms.popitem(last=False)
        return room

    @staticmethod
    async def _create_and_power(writer: RoomWriter) -> tuple[Event | None, Event | None]:
        ids = await state.get_current_state(
            writer.conn, writer.room_id, {CREATE_KEY, POWER_LEVELS_KEY}
        )
        found = await load_events(writer.conn, writer.cache, ids.values())
        return found.get(ids.get(CREATE_KEY, "")), found.get(ids.get(POWER_LEVELS_KEY, ""))

    async def _groups(
        self, conn: Connection, room: RoomPushState, event: Event
    ) -> list[Recipients]:
        """The event's recipients grouped by shared rules: local joined members (the
        sender too: the caller leaves them out of what is stored), and a local user
        invited. The members' grouping is kept with the room until its members or
        anyone's rules change."""
        generation = self.push_rules.generation
        if room.grouped is None or room.grouped[0] != generation:
            shared = await self.push_rules.shared(conn, list(room.members))
            room.grouped = (
                generation,
                [Recipients(r, [room.members[u] for u in us], list(us)) for r, us in shared],
            )
        groups = list(room.grouped[1])
        if (
            event.type == MEMBER
            and event.membership == "invite"
            and event.state_key
            and event.state_key != event.sender
            and domain_of(event.state_key) == self.server_name
            and event.state_key not in room.members
        ):
            invited = room.member(event.state_key)
            for rules, _ in await self.push_rules.shared(conn, [invited.user_id]):
                groups.append(Recipients(rules, [invited], [invited.user_id]))
        return groups

    async def before_commit(self, writers: list[RoomWriter]) -> None:
        """EventWriter's in-transaction hook: store the push actions of the new events
        of every room of the transaction. Users who ignore a sender get no notification
        of their messages (state events still count: the spec keeps showing those); who
        ignores the senders is asked once for all rooms, of a cache kept in memory."""
        senders = {
            p.event.sender for w in writers for p in w.persisted if p.event.state_key is None
        }
        ignoring = await self._ignoring(writers[0].conn, senders) if senders else {}
        for writer in writers:
            await self._store_actions(writer, ignoring)

    async def _store_actions(
        self, writer: RoomWriter, ignoring: Mapping[str, frozenset[str]]
    ) -> None:
        """The push actions of one room's new events.

        Users are evaluated by group (`PushRuleService.shared`): the conditions that do
        not depend on the user once per group and event, the others per user; the
        outcome is the one each user's own rules give (tests/unit test_push_shared).
        Members with one outcome for an event are stored as one group; the members an
        event notifies plainly, when they are most of the room, as one room row."""
        room = await self._room_state(writer)
        server = self.server_name
        spans = [
            room_store.SpanChange(user_id, membership == "join", position)
            for user_id, membership, _, position in writer.membership_changes
            if domain_of(user_id) == server
        ]
        await room_store.record_spans(writer.conn, writer.room_id, spans)
        out: list[store.PushActionGroup] = []
        shared: list[room_store.RoomAction] = []
        for persisted in writer.persisted:
            event = persisted.event
            skipped = ignoring.get(event.sender, frozenset()) if event.state_key is None else None
            groups = await self._notified(writer.conn, room, event, persisted.stream_ordering)
            groups = (
                [replace(g, user_ids=[u for u in g.user_ids if u not in skipped]) for g in groups]
                if skipped
                else groups
            )
            groups = [g for g in groups if g.user_ids]
            # The members of the room at this position are `room.members` only when the
            # commit changes no local membership (room rows count from the spans).
            row = None if spans else _room_row(room, groups, persisted.stream_ordering)
            if row is not None:
                shared.append(row)
                writer.notified_room = True
                groups = [g for g in groups if not _plain(g)]
            for group in groups:
                writer.notified_users.update(group.user_ids)
            out.extend(groups)
        await store.insert_push_actions(writer.conn, writer.room_id, out)
        if not (writer.notified_users or writer.notified_room):
            return
        # Whose pushers to wake rides the commit's round trip (push delivery would
        # otherwise ask after it), in one statement with the room rows.
        writer.notified_pushers = await pushers_store.pushers_to_wake_queued(
            writer.conn,
            sorted(writer.notified_users),
            notified_rooms(writer),
            written_with=room_store.room_actions_insert(writer.room_id, shared) if shared else None,
        )

    async def _ignoring(self, conn: Connection, senders: set[str]) -> dict[str, frozenset[str]]:
        """For each of `senders`, the local users who ignore them."""
        cache = self._ignorers
        missing = sorted(s for s in senders if s not in cache)
        found: dict[str, frozenset[str]] = {}
        if missing:
            generation = self._ignores_generation
            read = await account_data_store.ignorers(conn, missing)
            found = {s: frozenset(read.get(s, ())) for s in missing}
            if generation == self._ignores_generation:
                cache.update(found)
                while len(cache) > CACHED_SENDERS:
                    cache.popitem(last=False)
        for sender in senders:
            if sender not in found:
                cache.move_to_end(sender)
                found[sender] = cache[sender]
        return found

    async def ignores_changed(self, user_id: str) -> None:
        """`user_id` changed their ignore list (committed): drop what every process
        knows of who ignores whom."""
        self._forget_ignorers()
        await self.notifier.broadcast(IGNORES_KIND, {"user_id": user_id})

    async def _on_ignores_broadcast(self, payload: Mapping[str, Any]) -> None:
        self._forget_ignorers()

    def _forget_ignorers(self) -> None:
        self._ignorers.clear()
        self._ignores_generation += 1

    async def _notified(
        self, conn: Connection, room: RoomPushState, event: Event, position: int
    ) -> list[store.PushActionGroup]:
        """The users the event notifies (not its sender), by outcome."""
        groups = await self._groups(conn, room, event)
        pdu, sender = event.pdu, event.sender
        thread = thread_of(event)
        facts = room.facts(user_level(sender, room.create, room.power))
        encoded: dict[int, str | None] = {}
        out: list[store.PushActionGroup] = []
        for group in groups:
            if not group.members:
                continue
            for outcome, matched in group.rules.evaluate_groups(pdu, facts, group.members):
                if not outcome.notify:
                    continue
                user_ids = _ids_but(group, matched, sender)
                if user_ids:
                    actions = self._encode(outcome, encoded)
                    out.append(
                        store.PushActionGroup(
                            user_ids, position, thread, actions, outcome.highlight
                        )
                    )
        return out

    @staticmethod
    def _encode(outcome: Outcome, encoded: dict[int, str | None]) -> str | None:
        """The actions as stored: None for the plain ["notify"], else JSON text."""
        key = id(outcome)
        if key not in encoded:
            actions = list(outcome.actions)
            plain = actions == list(store.NOTIFY)
            encoded[key] = None if plain else orjson.dumps(actions).decode()
        return encoded[key]

    # -- reading -----------------------------------------------------------------------

    async def unread(
        self,
        conn: Connection,
        user_id: str,
        room_ids: Sequence[str],
        by_thread: bool,
        safe: int | None = None,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Per room, `unread_notifications` (and `unread_thread_notifications` when the
        filter asks for counts by thread) as sync shows them. `safe`: an events position
        known to be safe (the sync's own), which spares reading one. `then`: the
        caller's statements, sent in the counts' last round trip."""
        counts = await store.unread_counts(conn, user_id, room_ids, safe, then)
        return _shown(counts, by_thread)

    async def queue_unread(
        self, conn: Connection, user_id: str, room_ids: Sequence[str], safe: int
    ) -> QueuedUnread:
        """The counting of `unread` (main timelines), sent in the caller's pipeline
        with its own statements (see `store.queue_unread_counts`): read once the
        pipeline has synced."""
        return QueuedUnread(await store.queue_unread_counts(conn, user_id, room_ids, safe))

    async def list(
        self, user_id: str, from_token: str | None, limit: int, only: str | None
    ) -> dict[str, Any]:
        """GET /notifications: the user's notified events, newest first."""
        before: int | None = None
        if from_token is not None:
            try:
                before = int(from_token)
            except ValueError:
                before = -1
            if not 0 <= before < 2**63:  # a stream position, as the BIGINT column holds
                raise ServiceError(400, "M_INVALID_PARAM", "Unknown 'from' token")
        only_highlight = only is not None and "highlight" in only
        async with self.db.pool.connection() as conn:
            rows = await store.notifications(conn, user_id, before, limit, only_highlight)
            # Formatted as every read path does, so an event redacted since is served
            # redacted.
            formatted = await format_events(conn, self.event_cache, [r.event_id for r in rows])
        events = {event["event_id"]: event for event in formatted}
        notifications = []
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            notifications.append(
                {
                    "actions": row.actions,
                    "event": event,
                    "read": row.read,
                    "room_id": row.room_id,
                    "ts": row.ts,
                }
            )
        body: dict[str, Any] = {"notifications": notifications}
        if len(rows) == limit and rows:
            body["next_token"] = str(rows[-1].stream_ordering)
        return body


@dataclass(frozen=True, slots=True)
class QueuedUnread:
    queued: store.QueuedCounts

    async def read(self) -> dict[str, dict[str, Any]] | None:
        """Per room, as `unread` (without threads) shows them; None when the counts
        must be read again with `unread` (a summary to recount)."""
        counts = await self.queued.counts()
        return None if counts is None else _shown(counts, False)


def _shown(counts: Mapping[tuple[str, str], store.Counts], by_thread: bool) -> dict[str, Any]:
    """Counts by (room, thread) as sync shows them, per room."""
    out: dict[str, dict[str, Any]] = {}
    for (room_id, thread_id), count in counts.items():
        entry = out.setdefault(
            room_id, {"unread_notifications": {"notification_count": 0, "highlight_count": 0}}
        )
        if by_thread and thread_id != MAIN_THREAD:
            threads = entry.setdefault("unread_thread_notifications", {})
            threads[thread_id] = {
                "notification_count": count.notifications,
                "highlight_count": count.highlights,
            }
            continue
        main = entry["unread_notifications"]
        main["notification_count"] += count.notifications
        main["highlight_count"] += count.highlights
    return out
