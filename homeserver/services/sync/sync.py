"""`/sync`: what changed for a user since a token, waiting for it when nothing has.

A sync compares the client's token with the current one stream by stream and
reads only the streams that moved: an incremental sync costs what happened since
the token, not the number of rooms the user is in. Changed rooms come from one
query over the events of the stream range (storage/sync/sync.py); a sync whose token is
current reads nothing at all and goes straight to waiting on the notifier, keyed
by the user and their joined rooms (kept in memory, per user, valid at a stream
position and carried forward by each sync's own findings).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.accounts.filters import (
    FieldPath,
    Filter,
    FilterService,
    only_fields,
    parse_filter,
)
from homeserver.services.core.errors import ServiceError, invalid_param
from homeserver.services.core.gc_pause import gc_resumed
from homeserver.services.core.notifier import Notifier
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.e2ee.keys import E2EEKeys
from homeserver.services.ephemeral.presence import PresenceService
from homeserver.services.ephemeral.receipts import ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import TypingService
from homeserver.services.push.notifications import NotificationService
from homeserver.services.push.rules import PUSH_RULES_TYPE, PushRuleService
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.sync.partial import with_full_states
from homeserver.services.sync.request import MAX_TIMEOUT_MS, PRESENCE_STATES, SyncRequest
from homeserver.services.sync.rooms import Rendered, RoomsBuilder
from homeserver.services.sync.state import LazyMembers, RoomPlan
from homeserver.services.sync.tokens import DB_STREAMS, InvalidToken, SyncToken
from homeserver.services.sync.unread import build_with_counts
from homeserver.storage.accounts import account_data as account_data_store
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.rooms import memberships
from homeserver.storage.sync import sync as sync_store

# How long a sync waits for writes already announced for the user to become readable
# (read-your-writes); a writer stuck longer than this is not waited for.
MAX_SETTLE_S = 2.0
INITIAL_SYNC_CONCURRENCY = 4  # syncs from scratch computed at once (`_initial_sync`)
_ALL_MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small bounded LRU map: per-user memories must not grow without bound."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(slots=True)
class _Result:
    body: JsonDict
    empty: bool
    joined: frozenset[str]


class SyncService:
    def __init__(
        self,
        db: Database,
        event_cache: EventCache,
        notifier: Notifier,
        *,
        filters: FilterService,
        typing: TypingService,
        receipts: ReceiptService,
        presence: PresenceService,
        to_device: ToDeviceService,
        device_lists: DeviceLists,
        keys: E2EEKeys,
        notifications: NotificationService,
        push_rules: PushRuleService,
    ) -> None:
        self.db = db
        self.event_cache = event_cache
        self.notifier = notifier
        self.filters = filters
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self.to_device = to_device
        self.device_lists = device_lists
        self.keys = keys
        self.notifications = notifications
        self.push_rules = push_rules
        self.lazy = LazyMembers()
        self.rendered = Rendered()
        # Parsed filters by (user, filter text): stored filters never change.
        self._filters: _Lru[tuple[str, str], Filter] = _Lru(10_000)
        # Per user: (events position the set is valid at, joined room ids).
        self._joined: _Lru[str, tuple[int, frozenset[str]]] = _Lru(100_000)
        # Per device: the to-device position already acknowledged.
        self._acked: _Lru[tuple[str, str], int] = _Lru(100_000)
        self._initial = asyncio.Semaphore(INITIAL_SYNC_CONCURRENCY)

    # -- tokens ------------------------------------------------------------------

    def current_token(self) -> SyncToken:
        """The positions every process may read up to now (plus this process's typing)."""
        positions = self.notifier.positions
        return SyncToken(
            typing=self.typing.position, **{s: positions.get(s, 0) for s in DB_STREAMS}
        )

    async def _check_since(self, text: str, now: SyncToken) -> SyncToken:
        """The client's token, or 400 if it is garbage or was never issued."""
        try:
            since = SyncToken.parse(text)
        except InvalidToken:
            raise invalid_param(f"Invalid sync token {text[:64]!r}") from None
        if since.typing > now.typing:
            # Typing positions are per process: another process's clock, or ours
            # before a restart. Starting typing over from nothing is harmless.
            since = since.with_(typing=0)
        ahead = since.ahead_of(now, DB_STREAMS)
        if ahead:
            # Another process may have issued it a moment before our positions caught
            # up; only a position beyond every allocated one was never issued.
            async with self.db.pool.connection() as conn:
                counters = await sync_store.stream_counters(conn)
            future = [s for s in ahead if since.get(s) > counters.get(s, 0)]
            if future:
                raise invalid_param(
                    f"Sync token is from the future: its {', '.join(future)} position is"
                    " beyond anything this server has issued"
                )
        return since

    # -- filters -----------------------------------------------------------------

    async def _filter(self, requester: Requester, text: str | None) -> Filter:
        if not text:
            return Filter()
        key = (requester.user_id, text)
        cached = self._filters.get(key)
        if cached is not None:
            return cached
        if text.startswith("{"):
            try:
                definition = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ServiceError(400, "M_BAD_JSON", "filter is not valid JSON") from None
        else:
            definition = await self.filters.get_filter_definition(
                requester, requester.user_id, text
            )
        parsed = parse_filter(definition)
        self._filters.put(key, parsed)
        return parsed

    # -- the sync ------------------------------------------------------------------

    async def sync(self, requester: Requester, request: SyncRequest) -> JsonDict:
        if request.set_presence is not None and request.set_presence not in PRESENCE_STATES:
            raise invalid_param(f"set_presence must be one of {', '.join(PRESENCE_STATES)}")
        sync_filter = await self._filter(requester, request.filter)
        await self.presence.user_synced(requester.user_id, request.set_presence)
        known = self._joined.get(requester.user_id)
        await self.notifier.settle(
            requester.user_id, known[1] if known is not None else (), MAX_SETTLE_S
        )
        if request.since is None:
            return await self._initial_sync(requester, sync_filter, request)
        now = self.current_token()
        since = await self._check_since(request.since, now)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(request.timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while True:
            result = await self._compute(requester, sync_filter, since, now, request)
            remaining = deadline - loop.time()
            if (
                request.full_state
                or not result.empty
                or remaining <= 0
                or self.notifier.draining  # stopping: the client syncs again elsewhere
            ):
                if not result.empty:
                    await self._add_key_counts(requester, result.body)
                return result.body
            latest = self.current_token()
            if latest == now:
                # Nothing became readable while we computed: sleep until something
                # for this user or their rooms is notified. No await between the
                # check and the waiter's registration, so no wake-up is lost.
                with gc_resumed():
                    await self.notifier.wait(requester.user_id, result.joined, remaining)
                latest = self.current_token()
            now = latest

    async def _initial_sync(
        self, requester: Requester, sync_filter: Filter, request: SyncRequest
    ) -> JsonDict:
        """At most INITIAL_SYNC_CONCURRENCY at once: each holds its whole answer until
        written, and a storm of them (clients back after a restart) left memory grown and
        fragmented for good (20 at once: 8 MiB; 4: 3.5). Others wait, costing nothing."""
        async with self._initial:
            result = await self._compute(
                requester, sync_filter, None, self.current_token(), request
            )
            await self._add_key_counts(requester, result.body)
            return result.body

    async def _compute(
        self,
        requester: Requester,
        sync_filter: Filter,
        since: SyncToken | None,
        now: SyncToken,
        request: SyncRequest,
    ) -> _Result:
        user_id = requester.user_id
        full_state = request.full_state
        next_batch = now if since is None else now.max(since)
        await self._ack_to_device(requester, since)
        if since is not None and not full_state and not now.ahead_of(since):
            # Nothing moved: answer from memory.
            joined = self._cached_joined(user_id, now.events)
            if joined is None:
                async with self.db.pool.connection() as conn:
                    joined = await self._load_joined(conn, user_id, now.events)
            return _Result({"next_batch": str(next_batch)}, True, joined)
        async with self.db.pool.connection() as conn:
            plans, joined = await self._plan_rooms(
                conn, user_id, sync_filter, since, now, full_state
            )
            plans = await self._without_ignored_invites(conn, user_id, plans)
            if since is not None and not sync_filter.room.state.lazy_load_members:
                plans = await with_full_states(
                    conn, user_id, plans, joined, since.events, now.events
                )
            global_data, room_data = await self._account_data(
                conn, user_id, sync_filter, since, now
            )
            extras: dict[str, JsonDict] = {}
            visible = joined | {p.room_id for p in plans if p.section == "leave"}
            for room_id, events in room_data.items():
                if room_id in visible and sync_filter.room.matches_room(room_id):
                    extras.setdefault(room_id, {})["account_data"] = {"events": events}
            builder = RoomsBuilder(
                conn,
                self.event_cache,
                self.lazy,
                self.rendered,
                user_id=user_id,
                device_id=requester.device_id,
                sync_filter=sync_filter,
                now=next_batch,
                state_after=request.use_state_after,
                pool=self.db.pool,
            )
            for room_id, ephemeral in (
                await self._ephemeral(conn, user_id, sync_filter, joined, since, now)
            ).items():
                extras.setdefault(room_id, {})["ephemeral"] = {"events": ephemeral}
            if since is None or full_state:
                self.lazy.reset(user_id, requester.device_id)
            rooms = await build_with_counts(
                conn, self.db.pool, self.notifications, builder, plans, extras
            )
            body: JsonDict = {"next_batch": ""}
            sections = {k: v for k, v in rooms.items() if v}
            if sections or since is None:
                body["rooms"] = sections
            if global_data or since is None:
                body["account_data"] = {"events": global_data}
            presence = await self._presence(conn, user_id, sync_filter, since, now, plans, joined)
            if presence:
                body["presence"] = {"events": presence}
            if since is not None and now.device_lists > since.device_lists:
                changed, left = await self.device_lists.changes(
                    conn, user_id, since.device_lists, now.device_lists
                )
                if changed or left:
                    body["device_lists"] = {"changed": changed, "left": left}
        to_device, reached = await self._to_device(requester, since, now)
        if to_device:
            body["to_device"] = {"events": to_device}
        body["next_batch"] = str(next_batch.with_(to_device=reached))
        empty = not (set(body) - {"next_batch"})
        if sync_filter.field_paths is not None:
            _keep_fields(body, sync_filter.field_paths)
        return _Result(body, empty, joined)

    # -- the other streams ------------------------------------------------------------

    async def _ephemeral(
        self,
        conn: Connection,
        user_id: str,
        sync_filter: Filter,
        joined: frozenset[str],
        since: SyncToken | None,
        now: SyncToken,
    ) -> dict[str, list[JsonDict]]:
        """Typing notices and receipts of joined rooms, changed since the token."""
        event_filter = sync_filter.room.ephemeral
        out: dict[str, list[JsonDict]] = {}
        typing_since = 0 if since is None else since.typing
        if now.typing > typing_since:
            for room_id in self.typing.rooms_changed_since(typing_since) & joined:
                users = self.typing.typing_in(room_id)
                if since is None and not users:
                    continue
                out.setdefault(room_id, []).append(
                    {"type": "m.typing", "content": {"user_ids": users}}
                )
        receipts_since = 0 if since is None else since.receipts
        if now.receipts > receipts_since and joined:
            receipts = await self.receipts.receipts_for_rooms(
                conn, sorted(joined), receipts_since, now.receipts, user_id
            )
            for room_id, content in receipts.items():
                out.setdefault(room_id, []).append({"type": "m.receipt", "content": content})
        return {
            room_id: kept
            for room_id, events in out.items()
            if sync_filter.room.matches_room(room_id)
            and (kept := [e for e in events if event_filter.matches({**e, "room_id": room_id})])
        }

    async def _presence(
        self,
        conn: Connection,
        user_id: str,
        sync_filter: Filter,
        since: SyncToken | None,
        now: SyncToken,
        plans: list[RoomPlan],
        joined: frozenset[str],
    ) -> list[JsonDict]:
        """Presence changed since the token; and the presence of users the user has
        just come to share a room with (a room they joined, or someone joining one of
        theirs), whose earlier changes they were not told of."""
        start = 0 if since is None else since.presence
        events: list[JsonDict] = []
        if now.presence > start:
            events = await self.presence.presence_events(conn, user_id, start, now.presence)
        if since is not None and now.events > since.events and self.presence.enabled:
            fresh = [p.room_id for p in plans if p.section == "join" and p.full]
            newcomers = await sync_store.newly_joined_members(
                conn, fresh, sorted(joined), since.events, now.events
            )
            newcomers -= {user_id} | {e["sender"] for e in events}
            events += await self.presence.current_presence(conn, sorted(newcomers), now.presence)
        return [e for e in events if sync_filter.presence.matches(e)]

    async def _to_device(
        self, requester: Requester, since: SyncToken | None, now: SyncToken
    ) -> tuple[list[JsonDict], int]:
        """Messages for this device, and the position the device then has them up to.
        Coming back with a token acknowledges what it covers (`_ack_to_device`), so a
        response lost on the way is answered again and nothing is delivered twice."""
        user_id, device_id = requester.user_id, requester.device_id
        start = 0 if since is None else since.to_device
        if now.to_device <= start:
            return [], start
        return await self.to_device.messages_for(user_id, device_id, start, now.to_device)

    async def _ack_to_device(self, requester: Requester, since: SyncToken | None) -> None:
        """Forget the device's messages its token shows it has (once per position)."""
        if since is None or since.to_device == 0:
            return
        key = (requester.user_id, requester.device_id)
        acked = self._acked.get(key)
        if acked is None or acked < since.to_device:
            await self.to_device.ack(key[0], key[1], since.to_device)
            self._acked.put(key, since.to_device)

    async def _add_key_counts(self, requester: Requester, body: JsonDict) -> None:
        """One-time and fallback key state of the device: clients top their keys up
        from these, so every sync that says anything carries them."""
        user_id, device_id = requester.user_id, requester.device_id
        body["device_one_time_keys_count"] = await self.keys.one_time_key_counts(user_id, device_id)
        body["device_unused_fallback_key_types"] = await self.keys.unused_fallback_key_types(
            user_id, device_id
        )

    # -- rooms ---------------------------------------------------------------------

    def _cached_joined(self, user_id: str, position: int) -> frozenset[str] | None:
        cached = self._joined.get(user_id)
        if cached is not None and cached[0] == position:
            return cached[1]
        return None

    async def _load_joined(self, conn: Connection, user_id: str, position: int) -> frozenset[str]:
        rows = await memberships.rooms_of_user(conn, user_id)
        joined = frozenset(row.room_id for row in rows)
        self._joined.put(user_id, (position, joined))
        return joined

    async def _plan_rooms(
        self,
        conn: Connection,
        user_id: str,
        sync_filter: Filter,
        since: SyncToken | None,
        now: SyncToken,
        full_state: bool,
    ) -> tuple[list[RoomPlan], frozenset[str]]:
        """Which rooms this sync covers, and the rooms the user is joined to at `now`."""
        if since is None or full_state:
            plans, joined = await self._plan_all(conn, user_id, sync_filter, since, now.events)
        elif now.events > since.events:
            plans, joined = await self._plan_changed(conn, user_id, since.events, now.events)
        else:
            plans = []
            joined = self._cached_joined(user_id, now.events) or await self._load_joined(
                conn, user_id, now.events
            )
        return [p for p in plans if sync_filter.room.matches_room(p.room_id)], joined

    async def _plan_all(
        self,
        conn: Connection,
        user_id: str,
        sync_filter: Filter,
        since: SyncToken | None,
        upto: int,
    ) -> tuple[list[RoomPlan], frozenset[str]]:
        """Every room with all its state: an initial sync, or `full_state`."""
        rows = await memberships.rooms_of_user(conn, user_id, _ALL_MEMBERSHIPS)
        # A membership newer than `upto` is not readable yet: use the one before it.
        late = [(row.room_id, upto) for row in rows if row.stream_ordering > upto]
        earlier = await sync_store.memberships_at(conn, user_id, late)
        plans = []
        joined = set()
        for row in rows:
            membership, event_id, stream = row.membership, row.event_id, row.stream_ordering
            if stream > upto:
                at = earlier.get((row.room_id, upto))
                if at is None:
                    continue
                membership, event_id, stream = at.membership, at.event_id, at.stream_ordering
            if membership == "join":
                joined.add(row.room_id)
                # With full_state the timeline still starts at the token (the spec's
                # rule); the state is then the whole state at the timeline's start.
                lower = 0 if since is None else since.events
                plans.append(RoomPlan(row.room_id, "join", event_id, stream, lower, upto, True))
            elif membership in ("invite", "knock"):
                plans.append(RoomPlan(row.room_id, membership, event_id, stream, 0, upto, True))
            elif sync_filter.room.include_leave or (since is not None and stream > since.events):
                plans.append(RoomPlan(row.room_id, "leave", event_id, stream, 0, stream, True))
        frozen = frozenset(joined)
        self._joined.put(user_id, (upto, frozen))
        return plans, frozen

    async def _plan_changed(
        self, conn: Connection, user_id: str, since: int, upto: int
    ) -> tuple[list[RoomPlan], frozenset[str]]:
        """The rooms with events in (since, upto], and how the user's membership of
        each moved over that range."""
        changed = await sync_store.changed_rooms(conn, user_id, since, upto)
        moved = {c.room_id for c in changed if c.member_changed or c.membership_stream > upto}
        points = [(room_id, p) for room_id in moved for p in (since, upto)]
        at = await sync_store.memberships_at(conn, user_id, points)
        plans: list[RoomPlan] = []
        joins: set[str] = set()
        parts: set[str] = set()
        for c in changed:
            if c.room_id in moved:
                before = at.get((c.room_id, since))
                after = at.get((c.room_id, upto))
                if after is None:
                    continue
                was = before.membership if before is not None else None
                membership, event_id, stream = (
                    after.membership,
                    after.event_id,
                    after.stream_ordering,
                )
            else:
                was = membership = c.membership
                event_id, stream = c.membership_event_id, c.membership_stream
            if membership == "join":
                joins.add(c.room_id)
                fresh = was != "join"
                lower = 0 if fresh else since
                plans.append(
                    RoomPlan(c.room_id, "join", event_id, stream, lower, upto, fresh, fresh)
                )
                continue
            parts.add(c.room_id)
            if membership in ("leave", "ban") and was in ("join", "invite", "knock"):
                # Up to the leave; a refused invite or knock shows only the leave itself.
                lower = since if was == "join" else stream - 1
                plans.append(RoomPlan(c.room_id, "leave", event_id, stream, lower, stream, False))
            elif membership in ("invite", "knock") and was != membership:
                plans.append(RoomPlan(c.room_id, membership, event_id, stream, 0, upto, True))
        cached = self._cached_joined(user_id, since)
        if cached is None:
            joined = await self._load_joined(conn, user_id, upto)
        else:
            joined = (cached - parts) | joins
            self._joined.put(user_id, (upto, joined))
        return plans, joined

    async def _without_ignored_invites(
        self, conn: Connection, user_id: str, plans: list[RoomPlan]
    ) -> list[RoomPlan]:
        """Drop invitations sent by users the user ignores (m.ignored_user_list)."""
        invites = [p.membership_event_id for p in plans if p.section == "invite"]
        if not invites:
            return plans
        ignored = await account_data_store.ignored_users(conn, user_id)
        if not ignored:
            return plans
        events = await load_events(conn, self.event_cache, invites)
        return [
            p
            for p in plans
            if p.section != "invite"
            or (event := events.get(p.membership_event_id)) is None
            or event.sender not in ignored
        ]

    # -- account data ------------------------------------------------------------------

    async def _account_data(
        self,
        conn: Connection,
        user_id: str,
        sync_filter: Filter,
        since: SyncToken | None,
        now: SyncToken,
    ) -> tuple[list[JsonDict], dict[str, list[JsonDict]]]:
        """Global account data, and per-room account data by room, changed since the
        token (all of it for an initial sync)."""
        start = 0 if since is None else since.account_data
        if since is not None and now.account_data <= start:
            return [], {}
        rows = await account_data_store.account_data_since(conn, user_id, start, now.account_data)
        global_events: list[JsonDict] = []
        room_events: dict[str, list[JsonDict]] = {}
        if since is None and not any(r.room_id is None and r.type == PUSH_RULES_TYPE for r in rows):
            # Push rules are never unset: a user who never changed them has the defaults.
            rows.insert(0, account_data_store.AccountDataRow(None, PUSH_RULES_TYPE, {}, 0))
        for row in rows:
            event = {"type": row.type, "content": row.content}
            if row.room_id is None and row.type == PUSH_RULES_TYPE:
                # Merged with the server defaults as they are now.
                event = await self.push_rules.account_data_event(conn, user_id)
            if row.room_id is None:
                if sync_filter.account_data.matches(event):
                    global_events.append(event)
            elif sync_filter.room.account_data.matches({**event, "room_id": row.room_id}):
                room_events.setdefault(row.room_id, []).append(event)
        return global_events, room_events


def _keep_fields(body: JsonDict, paths: tuple[FieldPath, ...]) -> None:
    """Apply the filter's `event_fields` to every event the filter governs: room
    timelines, state, ephemeral and account data, global account data, presence."""

    def batch(holder: JsonDict, key: str) -> None:
        section = holder.get(key)
        if isinstance(section, dict) and "events" in section:
            section["events"] = [only_fields(e, paths) for e in section["events"]]

    for key in ("account_data", "presence"):
        batch(body, key)
    for section in ("join", "leave"):
        for room in body.get("rooms", {}).get(section, {}).values():
            for key in ("timeline", "state", "state_after", "ephemeral", "account_data"):
                batch(room, key)
