"""Which of a user's rooms each list holds, and the windows the client asked for.

The database filters, orders and counts a list's rooms (storage/sliding_sync/rooms.py
`list_rooms`) and returns only the rooms up to the end of its furthest range; here
the filters become that query's parameters and the rows become the ranges. A list
the connection already has may be brought up to date instead (`updatable`,
`known_windows`), and the windows it last had guess which timelines to read with it;
a first answer's lists may start, the same way, from the windows of the user's last
first answer of the same lists (`FirstWindows`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.types import JsonDict
from homeserver.services.sliding_sync.request import (
    ListFilters,
    ListRequest,
    RoomConfig,
    SlidingSyncRequest,
)
from homeserver.storage.sliding_sync.rooms import Known, ListQuery, UserRoom


@dataclass(frozen=True, slots=True)
class ListContext:
    """What the filters need beyond the rooms themselves."""

    dm_rooms: frozenset[str] = frozenset()
    space_children: Mapping[str, frozenset[str]] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Window:
    count: int
    ops: list[JsonDict]
    room_ids: list[str]


def list_query(filters: ListFilters, ctx: ListContext) -> ListQuery:
    children = None
    if filters.spaces is not None:
        children = sorted(
            {room for space in filters.spaces for room in ctx.space_children.get(space, ())}
        )
    return ListQuery(
        is_dm=filters.is_dm,
        dm_rooms=sorted(ctx.dm_rooms) if filters.is_dm is not None else (),
        is_encrypted=filters.is_encrypted,
        is_invite=filters.is_invite,
        space_children=children,
        room_types=filters.room_types,
        not_room_types=filters.not_room_types,
        tags=filters.tags,
        not_tags=filters.not_tags,
    )


def limit_of(request: ListRequest) -> int:
    """How many rooms of the list the ranges reach (they start at 0 in the order)."""
    return max((end + 1 for _, end in request.ranges), default=0)


def window(count: int, rooms: Sequence[UserRoom], request: ListRequest) -> Window:
    """The list's count and, per range (inclusive at both ends), its rooms."""
    kept = [room.room_id for room in rooms]
    ops = []
    in_windows: list[str] = []
    for start, end in request.ranges:
        ids = kept[start : end + 1]
        ops.append({"op": "SYNC", "range": [start, end], "room_ids": ids})
        in_windows.extend(ids)
    return Window(count, ops, in_windows)


def updatable(lst: ListRequest) -> bool:
    """Whether a list can be brought up to date from the connection's window: one range
    from the top, and no filter on what changes without an event in the room or a
    membership of the user (encryption and space children change with room state,
    tags are account data)."""
    filters = lst.filters
    return (
        len(lst.ranges) == 1
        and lst.ranges[0][0] == 0
        and filters.is_encrypted is None
        and filters.spaces is None
        and filters.tags is None
        and not filters.not_tags
    )


def context_key(request: SlidingSyncRequest, ctx: ListContext) -> str:
    """A digest of what the windows were read for: the lists' ranges and filters, and
    the account data they are filtered by (DM rooms, ignored users)."""
    lists = [f"{name}\x01{lst.ranges}\x01{lst.filters}" for name, lst in request.lists.items()]
    text = "\n".join([*sorted(lists), "", *sorted(ctx.dm_rooms), "", *sorted(ctx.ignored)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def known_windows(
    request: SlidingSyncRequest, had: Mapping[str, Any], context: str, since: int
) -> dict[str, Known]:
    """The windows the connection has (read at `since`), when they were read for the
    same lists and account data (`context_key`)."""
    if not isinstance(had.get("d"), list) or had["d"][1:] != [context]:
        return {}
    out = {}
    for name in request.lists:
        last = had.get("lists", {}).get(name)
        if isinstance(last, list) and len(last) == 2 and len(last[1]) == 1:
            out[name] = Known(room_ids=last[1][0], count=int(last[0]), at=since)
    return out


def guess_timelines(had: Mapping[str, Any], name: str, upper: int) -> list[tuple[str, int, int]]:
    """The timeline windows a list's rooms will likely need: those of the rooms of its
    last window the user was joined to, from where the connection has them up to now
    (read with the list in one round trip; a room whose window turns out otherwise is
    read again)."""
    last = had.get("lists", {}).get(name)
    if not isinstance(last, list) or len(last) != 2:
        return []
    had_rooms = had.get("rooms", {})
    out = []
    for room_ids in last[1]:
        for room_id in room_ids:
            record = had_rooms.get(room_id)
            if isinstance(record, dict) and record.get("s") == "join":
                out.append((room_id, int(record.get("p", 0)), upper))
    return out


@dataclass(frozen=True, slots=True)
class Start:
    """The windows the lists are brought up to date from (none: read whole), the digest
    of the memberships they hold for, and the timeline windows to read with them."""

    known: Mapping[str, Known] = field(default_factory=dict)
    digest: str | None = None
    guesses: Callable[[str, int], list[tuple[str, int, int]]] = lambda name, upper: []


@dataclass(frozen=True, slots=True)
class FirstWindows:
    """The windows a user's last first answer read, for the next first answer of the
    same lists (any connection of the user's, on this process) to bring up to date
    rather than read each list whole (`first_windows`)."""

    context: str  # `context_key`
    digest: str  # of the memberships the lists were read with (first answers' rule)
    known: Mapping[str, Known]
    # The rooms of the windows the user was joined to, whose timelines the next
    # first answer reads with its lists.
    joined: frozenset[str]

    @classmethod
    def of(
        cls,
        context: str,
        digest: str,
        at: int,
        windows: Mapping[str, Window],
        rooms: Mapping[str, UserRoom],
    ) -> FirstWindows:
        """The windows a first answer read at `at` (and its rooms), for the next."""
        return cls(
            context,
            digest,
            {name: Known(w.room_ids, w.count, at) for name, w in windows.items()},
            frozenset(
                room_id
                for w in windows.values()
                for room_id in w.room_ids
                if rooms[room_id].membership == "join"
            ),
        )

    def guesses(self, name: str, upper: int) -> list[tuple[str, int, int]]:
        """The timeline windows of list `name`'s joined rooms, as a first answer reads
        them (from the start, up to `upper`)."""
        known = self.known.get(name)
        if known is None:
            return []
        return [(room_id, 0, upper) for room_id in known.room_ids if room_id in self.joined]


class FirstWindowsCache:
    """Per user, the `FirstWindows` of their last first answers, one per set of lists
    (a user's phone and desktop ask for different ones), at most `PER_USER` each;
    past `size` in all, those of the least recently served user go first."""

    PER_USER = 4

    def __init__(self, size: int) -> None:
        self.size = size
        self._by_user: OrderedDict[str, list[FirstWindows]] = OrderedDict()
        self._count = 0

    def get(self, user_id: str, context: str) -> FirstWindows | None:
        entries = self._by_user.get(user_id, [])
        for i, entry in enumerate(entries):
            if entry.context == context:
                entries.append(entries.pop(i))
                self._by_user.move_to_end(user_id)
                return entry
        return None

    def put(self, user_id: str, windows: FirstWindows) -> None:
        entries = self._by_user.setdefault(user_id, [])
        before = len(entries)
        kept = [e for e in entries if e.context != windows.context][-(self.PER_USER - 1) :]
        entries[:] = [*kept, windows]
        self._count += len(entries) - before
        self._by_user.move_to_end(user_id)
        while self._count > self.size:
            _, evicted = self._by_user.popitem(last=False)
            self._count -= len(evicted)


def room_configs(
    request: SlidingSyncRequest, windows: Mapping[str, Window], subscribed: list[str]
) -> dict[str, RoomConfig]:
    """Each room's parameters: those of every list window it is in, then its
    subscription's, combined as the MSC says."""
    configs: dict[str, RoomConfig] = {}
    for name, found_window in windows.items():
        for room_id in found_window.room_ids:
            config = request.lists[name].config
            configs[room_id] = configs.get(room_id, config).combine(config)
    for room_id in subscribed:
        config = request.subscriptions[room_id]
        configs[room_id] = configs.get(room_id, config).combine(config)
    return configs
