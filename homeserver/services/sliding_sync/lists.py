"""Which of a user's rooms each list holds, and the windows the client asked for.

The database filters, orders and counts a list's rooms (storage/sliding_sync/rooms.py
`list_rooms`) and returns only the rooms up to the end of its furthest range; here
the filters become that query's parameters and the rows become the ranges. A list
the connection already has may be brought up to date instead (`updatable`,
`known_windows`), and the windows it last had guess which timelines to read with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.types import JsonDict
from homeserver.services.sliding_sync.request import ListFilters, ListRequest, SlidingSyncRequest
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
    request: SlidingSyncRequest, had: Mapping[str, Any], context: str
) -> dict[str, Known]:
    """The windows the connection has, when they were read for the same lists and
    account data (`context_key`)."""
    if not isinstance(had.get("d"), list) or had["d"][1:] != [context]:
        return {}
    out = {}
    for name in request.lists:
        last = had.get("lists", {}).get(name)
        if isinstance(last, list) and len(last) == 2 and len(last[1]) == 1:
            out[name] = Known(room_ids=last[1][0], count=int(last[0]))
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
