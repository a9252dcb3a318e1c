"""Which of a user's rooms each list holds, and the windows the client asked for.

The database filters, orders and counts a list's rooms (storage/sliding_sync/rooms.py
`list_rooms`) and returns only the rooms up to the end of its furthest range; here
the filters become that query's parameters and the rows become the ranges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from federation.types import JsonDict
from homeserver.services.sliding_sync.request import ListFilters, ListRequest
from homeserver.storage.sliding_sync.rooms import ListQuery, UserRoom


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
