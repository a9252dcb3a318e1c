"""The rooms of a sliding sync answer, read in batches for the rooms of the windows.

Timelines (with history visibility) and event rendering are /sync's own
(`services/sync/rooms.py`); state comes from the room's current state for the keys
the client asked for, or from the state at the user's leave for a room they left.
A room the connection already has is sent again only when something happened in
it since (or the client asks for more of it), with what it lacks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.events import MEMBER
from federation.types import JsonDict
from homeserver.services.accounts.filters import Filter, RoomEventFilter, RoomFilter
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.sliding_sync.request import RoomConfig
from homeserver.services.sync.rooms import ReadAhead, Rendered, RoomsBuilder
from homeserver.services.sync.state import LazyMembers, RoomPlan, TimelineRoom
from homeserver.services.sync.tokens import SyncToken
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.rooms.state import StateKey, StateMap
from homeserver.storage.sliding_sync import rooms as store
from homeserver.storage.sliding_sync.rooms import UserRoom
from homeserver.storage.sync import sync as sync_store

# Timeline rows read ahead (`recent_events`), by timeline limit and (room, lower, upper).
ReadTimelines = Mapping[int, Mapping[tuple[str, int, int], list[EventRow]]]
# Sends the caller's statements, given the connection's new records of the rooms.
Recorded = Callable[[Mapping[str, JsonDict]], Awaitable[None]]

NAME = ("m.room.name", "")
AVATAR = ("m.room.avatar", "")
LAZY = "$LAZY"
ME = "$ME"
WILDCARD = "*"
# Lazy members remembered per room and connection; beyond it they are sent again.
MAX_LAZY_REMEMBERED = 100


@dataclass(slots=True)
class Target:
    """A room to consider for this answer, and what the connection has of it."""

    room: UserRoom
    config: RoomConfig
    had: Mapping[str, Any] | None  # the connection's record of the room, if any

    @property
    def initial(self) -> bool:
        """Sent from nothing: new to the connection, or moving between the stripped
        form (invite, knock) and the full one."""
        if self.had is None:
            return True
        stripped = ("invite", "knock")
        return (self.had.get("s") in stripped) != (self.room.membership in stripped)

    @property
    def stripped(self) -> bool:
        """An invite or knock: sent as its stripped state, without a timeline."""
        return self.room.membership in ("invite", "knock")

    def window(self, now: int) -> tuple[str, int, int]:
        """The (room, lower, upper) stream window its timeline is read from."""
        lower = 0 if self.initial or self.had is None else int(self.had.get("p", 0))
        return self.room.room_id, lower, _upper(self.room, now)


@dataclass(slots=True)
class Rendering:
    rooms: dict[str, JsonDict] = field(default_factory=dict)
    # The connection's new record of each room considered.
    records: dict[str, JsonDict] = field(default_factory=dict)
    initial: set[str] = field(default_factory=set)
    # The timeline event ids sent per room (receipts of a room sent from nothing are
    # limited to these and the user's own).
    timeline_ids: dict[str, set[str]] = field(default_factory=dict)
    # Rooms sent whose unread counts are still to be read (`add_unread`), last: the
    # connection's new position is saved in the same round trip.
    counted: list[str] = field(default_factory=list)

    def add_unread(self, counts: Mapping[str, JsonDict]) -> None:
        for room_id in self.counted:
            unread = counts.get(room_id, {}).get("unread_notifications", {})
            entry = self.rooms[room_id]
            entry["notification_count"] = unread.get("notification_count", 0)
            entry["highlight_count"] = unread.get("highlight_count", 0)


def _had_members(t: Target) -> list[str]:
    """The lazy members the connection was sent in the room (none when it is sent
    from nothing)."""
    if t.had is None or t.initial:
        return []
    return list(t.had.get("m", []))


def _fresh(t: Target) -> bool:
    """Whether the room's state is sent whole: new to the connection, or asked for
    with other parameters than last time."""
    return t.initial or t.had is None or t.had.get("k") != t.config.key()


def _upper(room: UserRoom, now: int) -> int:
    return now if room.membership == "join" else min(room.stream_ordering, now)


def _expand(config: RoomConfig, user_id: str) -> tuple[bool, set[str], set[StateKey], bool]:
    """(everything, whole types, exact keys, lazy members) the config asks for."""
    everything = False
    whole: set[str] = set()
    keys: set[StateKey] = set()
    lazy = False
    for event_type, state_key in config.required_state:
        if event_type == WILDCARD:
            everything = True
        elif state_key == WILDCARD:
            whole.add(event_type)
        elif event_type == MEMBER and state_key == LAZY:
            lazy = True
        else:
            keys.add((event_type, user_id if state_key == ME else state_key))
    return everything, whole, keys, lazy


def _wanted(state: StateMap, config: RoomConfig, user_id: str, lazy_users: set[str]) -> StateMap:
    everything, whole, keys, _ = _expand(config, user_id)
    if everything:
        return dict(state)
    lazy_keys = {(MEMBER, u) for u in lazy_users}
    return {k: v for k, v in state.items() if k[0] in whole or k in keys or k in lazy_keys}


class RoomRenderer:
    """Renders the rooms of one answer."""

    def __init__(
        self,
        conn: Connection,
        cache: EventCache,
        lazy: LazyMembers,
        rendered: Rendered,
        *,
        user_id: str,
        device_id: str,
        now: SyncToken,
        since_events: int | None,
        dm_rooms: frozenset[str],
        ignored: frozenset[str],
    ) -> None:
        self.conn = conn
        self.cache = cache
        self.lazy = lazy
        self.rendered = rendered
        self.user_id = user_id
        self.device_id = device_id
        self.now = now
        self.since_events = since_events
        self.dm_rooms = dm_rooms
        self.ignored = ignored

    def _builder(self, limit: int) -> RoomsBuilder:
        room_filter = RoomFilter(timeline=RoomEventFilter(limit=limit))
        return RoomsBuilder(
            self.conn,
            self.cache,
            self.lazy,
            self.rendered,
            user_id=self.user_id,
            device_id=self.device_id,
            sync_filter=Filter(room=room_filter),
            now=self.now,
            ignored=self.ignored,
        )

    async def _timelines(
        self, targets: Sequence[Target], read: ReadTimelines
    ) -> dict[str, TimelineRoom]:
        by_limit: dict[int, list[RoomPlan]] = {}
        for t in targets:
            room = t.room
            _, lower, upper = t.window(self.now.events)
            section = "join" if room.membership == "join" else "leave"
            plan = RoomPlan(
                room.room_id, section, room.event_id, room.stream_ordering, lower, upper, t.initial
            )
            by_limit.setdefault(t.config.timeline_limit, []).append(plan)
        out: dict[str, TimelineRoom] = {}
        for limit, plans in by_limit.items():
            for timeline_room in await self._builder(limit).timelines(plans, read.get(limit, {})):
                out[timeline_room.plan.room_id] = timeline_room
        return out

    async def render(
        self, targets: Sequence[Target], read: ReadTimelines, then: Recorded | None = None
    ) -> Rendering:
        """`read`: timeline rows already read, by timeline limit and window. `then`:
        given the connection's new records of the rooms (final before the state is
        read), sends the caller's statements in the state's round trip; not called
        when no state is read."""
        result = Rendering()
        await self._stripped([t for t in targets if t.stripped], result)
        others = [t for t in targets if not t.stripped]
        timelines = await self._timelines(others, read)
        sent: list[Target] = []
        for t in others:
            timeline_room = timelines[t.room.room_id]
            record = {"s": t.room.membership, "p": timeline_room.plan.upper, "k": t.config.key()}
            if t.had is not None and not t.initial:
                record["m"] = t.had.get("m", [])
            if _expand(t.config, self.user_id)[3]:
                # The lazy members the connection will have been sent: those it had,
                # then this timeline's new senders.
                had = _had_members(t)
                senders = {event.sender for event, _ in timeline_room.timeline}
                record["m"] = (had + sorted(senders - set(had)))[-MAX_LAZY_REMEMBERED:]
            result.records[t.room.room_id] = record
            changed = t.had is None or t.had.get("k") != record["k"]
            if t.initial or changed or timeline_room.timeline or timeline_room.limited:
                sent.append(t)
        if sent:
            after = None if then is None else functools.partial(then, result.records)
            await self._fill(sent, timelines, result, after)
        return result

    async def _fill(
        self,
        targets: Sequence[Target],
        timelines: Mapping[str, TimelineRoom],
        result: Rendering,
        then: Callable[[], Awaitable[None]] | None,
    ) -> None:
        states, deltas, summaries, ahead = await self._states(targets, timelines, then)
        moved = [
            t.room.room_id for t in targets if not t.initial and self._members_moved(t, deltas)
        ]
        if moved:
            summaries.update(await sync_store.room_summaries(self.conn, moved, self.user_id))
        rooms = [timelines[t.room.room_id] for t in targets]
        for t in targets:
            timeline_room = timelines[t.room.room_id]
            timeline_room.state = self._required(t, timeline_room, states, deltas)
        rendered = await self._builder(0).render_events(rooms, ahead)
        naming = {
            t.room.room_id: states.get(t.room.room_id, {})
            if _fresh(t) or t.room.membership != "join"
            else deltas.get(t.room.room_id, {})
            for t in targets
        }
        meta = await self._meta(naming, summaries)
        builder = self._builder(0)
        for t in targets:
            room_id = t.room.room_id
            timeline_room = timelines[room_id]
            timeline = [rendered[row.event_id] for _, row in timeline_room.timeline]
            entry: JsonDict = {
                "notification_count": 0,
                "highlight_count": 0,
                "bump_stamp": t.room.bump_stamp,
                "limited": timeline_room.limited,
                "prev_batch": builder.prev_batch(timeline_room),
                "num_live": self._num_live(timeline_room),
            }
            required = [rendered[eid] for eid in timeline_room.state.values() if eid in rendered]
            # Empty sections are left out, as Synapse does.
            if required:
                entry["required_state"] = required
            if timeline:
                entry["timeline"] = timeline
            if t.initial:
                entry["initial"] = True
                result.initial.add(room_id)
                result.timeline_ids[room_id] = {row.event_id for _, row in timeline_room.timeline}
            if room_id in self.dm_rooms:
                entry["is_dm"] = True
            entry.update(meta.get(room_id, {}))
            summary = summaries.get(room_id)
            if summary is not None and t.room.membership == "join":
                entry["joined_count"] = summary.joined
                entry["invited_count"] = summary.invited
            result.rooms[room_id] = entry
            result.counted.append(room_id)

    def _num_live(self, room: TimelineRoom) -> int:
        if self.since_events is None:
            return 0
        return sum(
            1
            for _, row in room.timeline
            if row.stream_ordering is not None and row.stream_ordering > self.since_events
        )

    @staticmethod
    def _members_moved(t: Target, deltas: Mapping[str, StateMap]) -> bool:
        return any(k[0] == MEMBER for k in deltas.get(t.room.room_id, {}))

    async def _states(
        self,
        targets: Sequence[Target],
        timelines: Mapping[str, TimelineRoom],
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[
        dict[str, StateMap],
        dict[str, StateMap],
        dict[str, sync_store.RoomSummary],
        ReadAhead | None,
    ]:
        """The state each room needs, what changed since the connection last had it,
        and the summaries of the rooms sent from nothing (read with the state). A room
        sent from nothing gets its current state (at the leave, for a room left) at
        the keys asked for plus name and avatar; a room the connection has gets only
        the member events of new senders (lazy loading) and the changes, read only
        when its timeline holds state events or skips some. What rendering would
        look up (the redactions of those state events, the transaction ids of the
        user's timeline events) rides the same round trip."""
        joined = [t for t in targets if t.room.membership == "join"]
        everything = False
        whole: set[str] = set()
        keys: set[StateKey] = set()
        needing: list[str] = []
        windows: list[tuple[str, int, int]] = []
        for t in joined:
            room_everything, room_whole, room_keys, lazy = _expand(t.config, self.user_id)
            timeline = timelines[t.room.room_id]
            senders = {event.sender for event, _ in timeline.timeline}
            if _fresh(t):
                everything = everything or room_everything
                whole |= room_whole
                keys |= room_keys | {NAME, AVATAR}
                if lazy:
                    keys |= {(MEMBER, user) for user in senders}
                needing.append(t.room.room_id)
                continue
            new = senders - set(t.had.get("m", [])) if lazy and t.had is not None else set()
            if new:
                keys |= {(MEMBER, user) for user in new}
                needing.append(t.room.room_id)
            if timeline.limited or any(e.state_key is not None for e, _ in timeline.timeline):
                lower = int(t.had.get("p", 0)) if t.had is not None else 0
                windows.append((t.room.room_id, lower, _upper(t.room, self.now.events)))
        initial = [t.room.room_id for t in targets if t.initial]
        own = [
            row.event_id
            for t in targets
            for event, row in timelines[t.room.room_id].timeline
            if event.sender == self.user_id
        ]
        states: dict[str, StateMap] = {}
        summaries: dict[str, sync_store.RoomSummary] = {}
        ahead = None
        if needing or initial:
            read = await store.current_state(
                self.conn,
                needing,
                keys,
                whole,
                everything,
                summarised=initial,
                user_id=self.user_id,
                own=own,
                device_id=self.device_id,
                then=then,
            )
            states, summaries = read.states, read.summaries
            checked = frozenset(e for state in states.values() for e in state.values())
            ahead = ReadAhead(checked, read.redacted, frozenset(own), read.txn_ids)
        left = [t for t in targets if t.room.membership != "join"]
        if left:
            states.update(await self._left_states(left))
        deltas = await store.state_changes(self.conn, windows)
        return states, deltas, summaries, ahead

    async def _left_states(self, left: Sequence[Target]) -> dict[str, StateMap]:
        """The state of each room left at the leave."""
        rows = await event_store.get_events(self.conn, [t.room.event_id for t in left])
        groups = {
            t.room.room_id: row.state_group
            for t in left
            if (row := rows.get(t.room.event_id)) is not None and row.state_group is not None
        }
        full = await sync_store.full_states(self.conn, groups.values())
        return {room_id: full.get(group, {}) for room_id, group in groups.items()}

    def _required(
        self,
        t: Target,
        timeline_room: TimelineRoom,
        states: Mapping[str, StateMap],
        deltas: Mapping[str, StateMap],
    ) -> StateMap:
        """The state events to send (the connection's record of its lazy members was
        brought up to date by `render`)."""
        room_id = t.room.room_id
        state = states.get(room_id, {})
        senders = {event.sender for event, _ in timeline_room.timeline}
        _, _, _, lazy = _expand(t.config, self.user_id)
        had_members = _had_members(t) if lazy else []
        fresh = _fresh(t)
        lazy_users = (senders - set(had_members)) if lazy else set()
        if fresh:
            wanted = _wanted(state, t.config, self.user_id, lazy_users)
        else:
            # Only what changed since the connection had the room, and the members
            # of new senders it has not been sent.
            delta = deltas.get(room_id, {})
            wanted = _wanted(delta, t.config, self.user_id, senders if lazy else set())
            for key, event_id in state.items():
                if key[0] == MEMBER and key[1] in lazy_users:
                    wanted[key] = event_id
        return wanted

    async def _meta(
        self, states: Mapping[str, StateMap], summaries: Mapping[str, sync_store.RoomSummary]
    ) -> dict[str, JsonDict]:
        """Name, avatar and (for a room without a name) heroes with their profiles."""
        ids = {state[k] for state in states.values() for k in (NAME, AVATAR) if k in state}
        events = await load_events(self.conn, self.cache, ids)
        out: dict[str, JsonDict] = {}
        hero_pairs: list[tuple[str, str]] = []
        for room_id, state in states.items():
            entry = out.setdefault(room_id, {})
            name_event = events.get(state.get(NAME, ""))
            name = name_event.content.get("name") if name_event is not None else None
            if isinstance(name, str) and name:
                entry["name"] = name
            avatar_event = events.get(state.get(AVATAR, ""))
            url = avatar_event.content.get("url") if avatar_event is not None else None
            if isinstance(url, str) and url:
                entry["avatar"] = url
            summary = summaries.get(room_id)
            if "name" not in entry and summary is not None and summary.heroes:
                hero_pairs.extend((room_id, user) for user in summary.heroes)
        profiles = await store.member_profiles(self.conn, hero_pairs)
        for room_id, user in hero_pairs:
            hero: JsonDict = {"user_id": user}
            profile = profiles.get((room_id, user))
            if profile is not None and profile.displayname is not None:
                hero["displayname"] = profile.displayname
            if profile is not None and profile.avatar_url is not None:
                hero["avatar_url"] = profile.avatar_url
            out[room_id].setdefault("heroes", []).append(hero)
        return out

    async def _stripped(self, targets: Iterable[Target], result: Rendering) -> None:
        """Invites and knocks: the stripped state, once per membership event."""
        fresh = [
            t for t in targets if t.had is None or t.had.get("e") != t.room.event_id or t.initial
        ]
        for t in targets:
            result.records[t.room.room_id] = {"s": t.room.membership, "e": t.room.event_id}
        if not fresh:
            return
        plans = [
            RoomPlan(
                t.room.room_id,
                t.room.membership,
                t.room.event_id,
                t.room.stream_ordering,
                0,
                t.room.stream_ordering,
                True,
            )
            for t in fresh
        ]
        states = await self._builder(0).stripped_states(plans)
        for t in fresh:
            room_id = t.room.room_id
            entry: JsonDict = {
                "notification_count": 0,
                "highlight_count": 0,
                "bump_stamp": t.room.bump_stamp,
                "invite_state": states.get(room_id, []),
                "initial": True,
            }
            if room_id in self.dm_rooms:
                entry["is_dm"] = True
            entry.update(_stripped_naming(entry["invite_state"]))
            result.rooms[room_id] = entry
            result.initial.add(room_id)


def _stripped_naming(state: Sequence[JsonDict]) -> JsonDict:
    """An invite's name and avatar, from its stripped state (as Synapse gives them)."""
    out: JsonDict = {}
    for event in state:
        content = event.get("content")
        if not isinstance(content, dict) or event.get("state_key") != "":
            continue
        if event.get("type") == NAME[0] and isinstance(content.get("name"), str):
            out["name"] = content["name"]
        elif event.get("type") == AVATAR[0] and isinstance(content.get("url"), str):
            out["avatar"] = content["url"]
    return {k: v for k, v in out.items() if v}
