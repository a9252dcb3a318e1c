"""The state a sync sends with each room's timeline, in one of two shapes.

`state` (the default) is the state at the timeline's **start**: all of it when the
client starts from nothing (initial sync, `full_state`, a room just joined), else
what changed between the since-token and the timeline's start, which is non-empty
only when the timeline is `limited` (the changes in the gap). The client applies
the timeline's state events on top.

`state_after` (`use_state_after=true`) is the state at the timeline's **end**: all
of it when the client starts from nothing, else everything that changed since the
token, the timeline's own state events included, because a client given
`state_after` must not take state from the timeline. This is what lets a client
get state right when the timeline is filtered or forks were resolved.

Both are computed from state groups at two stream positions with a fixed number of
batched queries (storage/sync/sync.py), and both honour lazy-loaded members the same
way: unchanged member events are sent only for the users the client needs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from federation.events import MEMBER, Event
from homeserver.services.rooms.event_cache import EventCache, load_events, state_entries
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.rooms.state import StateKey, StateMap
from homeserver.storage.sync import sync as sync_store

NAME = "m.room.name"
# The state that names a room; a room without either is named after its heroes.
NAMING: tuple[StateKey, ...] = ((NAME, ""), ("m.room.canonical_alias", ""))


@dataclass(slots=True)
class RoomPlan:
    """One room of a sync and how to render it."""

    room_id: str
    section: str  # "join", "leave", "invite" or "knock"
    membership_event_id: str
    membership_stream: int
    lower: int  # the timeline covers stream positions in (lower, upper]
    upper: int
    full: bool  # state from nothing, not a delta since `lower`
    # Joined since the token: the client has none of the room's history, which goes
    # back past the timeline, so the timeline is `limited` whatever its length.
    newly_joined: bool = False


@dataclass(slots=True)
class TimelineRoom:
    """A joined or left room of a sync as it is being built."""

    plan: RoomPlan
    timeline: list[tuple[Event, EventRow]] = field(default_factory=list)
    limited: bool = False
    state: StateMap = field(default_factory=dict)
    # The full state at the point the state is anchored to, when it was read.
    at_anchor: StateMap | None = None
    summary: sync_store.RoomSummary | None = None

    @property
    def start(self) -> int:
        """The stream position the timeline starts at (just after its end when empty)."""
        if self.timeline:
            row = self.timeline[0][1]
            assert row.stream_ordering is not None
            return row.stream_ordering
        return self.plan.upper + 1


class LazyMembers:
    """Which member events each device already has, per room, for lazy loading.

    Bounded: devices beyond `devices` are forgotten least recently used first, and a
    room's memory is dropped when it grows beyond `per_room` members; forgetting only
    means sending a member event again, which clients accept.
    """

    def __init__(self, devices: int = 10_000, per_room: int = 2_000) -> None:
        self._devices: OrderedDict[tuple[str, str], dict[str, dict[str, str]]] = OrderedDict()
        self._max_devices = devices
        self._per_room = per_room

    def _rooms(self, user_id: str, device_id: str) -> dict[str, dict[str, str]]:
        key = (user_id, device_id)
        rooms = self._devices.get(key)
        if rooms is None:
            rooms = self._devices[key] = {}
            if len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(key)
        return rooms

    def reset(self, user_id: str, device_id: str, room_id: str | None = None) -> None:
        """The client starts from nothing: in one room, or everywhere."""
        rooms = self._rooms(user_id, device_id)
        if room_id is None:
            rooms.clear()
        else:
            rooms.pop(room_id, None)

    def sent(self, user_id: str, device_id: str, room_id: str) -> Mapping[str, str]:
        return self._rooms(user_id, device_id).get(room_id, {})

    def remember(
        self, user_id: str, device_id: str, room_id: str, members: Mapping[str, str]
    ) -> None:
        if not members:
            return
        room = self._rooms(user_id, device_id).setdefault(room_id, {})
        room.update(members)
        if len(room) > self._per_room:
            room.clear()


class RoomStates:
    """Fills `state` of the rooms of one sync, at the timeline's start or end."""

    def __init__(
        self,
        conn: Connection,
        cache: EventCache,
        lazy: LazyMembers,
        *,
        user_id: str,
        device_id: str,
        after: bool,
        include_redundant_members: bool,
    ) -> None:
        self.conn = conn
        self.cache = cache
        self.lazy = lazy
        self.user_id = user_id
        self.device_id = device_id
        self.after = after
        self.include_redundant = include_redundant_members

    def anchor(self, room: TimelineRoom) -> int:
        """The position whose state is sent: the timeline's start, or its end."""
        return room.plan.upper + 1 if self.after else room.start

    def _wants_delta(self, room: TimelineRoom) -> bool:
        """Whether the room gets the changes since the token (not the whole state)."""
        return not room.plan.full and (self.after or room.limited)

    async def fill(self, rooms: Sequence[TimelineRoom], lazy_members: bool) -> None:
        """Each room's `state`: the whole state at the anchor, or the changes since
        the token. Equal state groups at both ends mean no change: nothing is read."""
        points: set[tuple[str, int]] = set()
        for room in rooms:
            room_id = room.plan.room_id
            delta = self._wants_delta(room)
            if room.plan.full or delta or lazy_members:
                points.add((room_id, self.anchor(room)))
            if delta:
                points.add((room_id, room.plan.lower + 1))
        groups = await sync_store.state_groups_before(self.conn, points)
        needed: set[int] = set()
        for room in rooms:
            room_id = room.plan.room_id
            at = groups.get((room_id, self.anchor(room)))
            if room.plan.full:
                if at is not None:
                    needed.add(at)
            elif self._wants_delta(room):
                since = groups.get((room_id, room.plan.lower + 1))
                if at != since:
                    needed.update(g for g in (at, since) if g is not None)
        states = await sync_store.full_states(self.conn, needed)
        for room in rooms:
            room_id = room.plan.room_id
            at = groups.get((room_id, self.anchor(room)))
            if room.plan.full:
                room.at_anchor = states.get(at, {}) if at is not None else {}
                room.state = dict(room.at_anchor)
            elif self._wants_delta(room):
                since = groups.get((room_id, room.plan.lower + 1))
                if at == since:
                    continue
                room.at_anchor = states.get(at, {}) if at is not None else {}
                before = states.get(since, {}) if since is not None else {}
                room.state = {k: v for k, v in room.at_anchor.items() if before.get(k) != v}
        if lazy_members:
            await self._lazy_members(rooms, groups)

    async def _lazy_members(
        self, rooms: Sequence[TimelineRoom], groups: Mapping[tuple[str, int], int]
    ) -> None:
        """Keep only the member events the client needs: the timeline's senders, the
        heroes of a room without a name (the client names it after them), the user's
        own on a fresh start, and every membership change since the token; and of
        those, only what this device does not have already."""
        lookups: dict[int, set[StateKey]] = {}
        for room in rooms:
            users = {event.sender for event, _ in room.timeline}
            if room.summary is not None:
                users.update(room.summary.heroes)
            group = groups.get((room.plan.room_id, self.anchor(room)))
            if group is not None and room.at_anchor is None:
                keys = {(MEMBER, u) for u in users} | set(NAMING)
                lookups.setdefault(group, set()).update(keys)
        keys = set().union(*lookups.values()) if lookups else set()
        found = await state_entries(self.conn, self.cache, lookups.keys(), keys)
        sources: dict[str, StateMap] = {}
        for room in rooms:
            source = room.at_anchor
            if source is None:
                group = groups.get((room.plan.room_id, self.anchor(room)))
                source = found.get(group, {}) if group is not None else {}
            sources[room.plan.room_id] = {
                **await _senders_from_auth_events(self.conn, self.cache, room, source),
                **source,
            }
        named = await self._named(rooms, sources)
        for room in rooms:
            room_id = room.plan.room_id
            users = {event.sender for event, _ in room.timeline}
            if room.summary is not None and room_id not in named:
                users.update(room.summary.heroes)
            if room.plan.full:
                users.add(self.user_id)
                self.lazy.reset(self.user_id, self.device_id, room_id)
            # Membership changes since the token are sent whatever the device has.
            changed = set() if room.plan.full else {sk for t, sk in room.state if t == MEMBER}
            source = sources[room_id]
            candidates = {k: v for k, v in room.state.items() if k[0] != MEMBER or k[1] in changed}
            for key, event_id in source.items():
                if key[0] == MEMBER and key[1] in users:
                    candidates.setdefault(key, event_id)
            sent = self.lazy.sent(self.user_id, self.device_id, room_id)
            room.state = {
                (event_type, state_key): event_id
                for (event_type, state_key), event_id in candidates.items()
                if event_type != MEMBER
                or state_key in changed
                or self.include_redundant
                or sent.get(state_key) != event_id
            }
            members = {sk: eid for (t, sk), eid in room.state.items() if t == MEMBER}
            if not self.after:
                # With `state` the client takes the timeline's member events as state
                # too; with `state_after` it must not, so only `state_after` counts.
                for event, _ in room.timeline:
                    if event.type == MEMBER and event.state_key is not None:
                        members[event.state_key] = event.event_id
            self.lazy.remember(self.user_id, self.device_id, room_id, members)

    async def _named(
        self, rooms: Sequence[TimelineRoom], sources: Mapping[str, StateMap]
    ) -> set[str]:
        """The rooms with a name or canonical alias at the timeline's end."""
        ids = {source[k] for source in sources.values() for k in NAMING if k in source}
        events = await load_events(self.conn, self.cache, ids)
        out = set()
        for room in rooms:
            source = sources[room.plan.room_id]
            naming = {key: events.get(source[key]) for key in NAMING if key in source}
            for event, _ in room.timeline:
                if event.state_key is not None and (event.type, event.state_key) in NAMING:
                    naming[(event.type, event.state_key)] = event
            if any(_names(event) for event in naming.values()):
                out.add(room.plan.room_id)
        return out


async def _senders_from_auth_events(
    conn: Connection, cache: EventCache, room: TimelineRoom, source: StateMap
) -> StateMap:
    """Member events of timeline senders that `source` lacks, from the auth events of
    their events: a room joined with partial state holds few members until its full
    state comes in, and each event cites its sender's membership (as Synapse does)."""
    missing = {e.sender for e, _ in room.timeline} - {k for t, k in source if t == MEMBER}
    if not missing:
        return {}
    cited = [a for e, _ in room.timeline if e.sender in missing for a in e.auth_event_ids]
    found = await load_events(conn, cache, cited)
    return {
        (MEMBER, event.state_key): event.event_id
        for event in found.values()
        if event.type == MEMBER and event.state_key in missing
    }


def _names(event: Event | None) -> bool:
    """Whether a name or canonical alias event gives the room a name."""
    if event is None:
        return False
    value = event.content.get("name" if event.type == NAME else "alias")
    return isinstance(value, str) and bool(value)
