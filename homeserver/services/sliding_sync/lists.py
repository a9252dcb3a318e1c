"""Which of a user's rooms each list holds, and the windows the client asked for.

Pure: given the user's rooms already ordered by bump stamp (one query), the filters
are applied in memory and only the rooms of the ranges are kept for reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from federation.types import JsonDict
from homeserver.services.sliding_sync.request import ListFilters, ListRequest
from homeserver.storage.sliding_sync.rooms import UserRoom

_NO_TAGS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ListContext:
    """What the filters need beyond the rooms themselves."""

    dm_rooms: frozenset[str] = frozenset()
    tags: Mapping[str, AbstractSet[str]] = field(default_factory=dict)
    space_children: Mapping[str, set[str]] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Window:
    count: int
    ops: list[JsonDict]
    room_ids: list[str]


def visible(room: UserRoom, user_id: str, since_events: int | None) -> bool:
    """Synapse's rule: a room the user left of their own accord (or whose invite they
    refused) drops out of the lists, unless they left since the connection's `pos`."""
    if room.membership != "leave" or room.sender != user_id:
        return True
    return since_events is not None and room.stream_ordering > since_events


def matches(room: UserRoom, filters: ListFilters, ctx: ListContext) -> bool:
    if filters.is_dm is not None and (room.room_id in ctx.dm_rooms) != filters.is_dm:
        return False
    if filters.is_encrypted is not None and room.is_encrypted != filters.is_encrypted:
        return False
    if filters.is_invite is not None and (room.membership == "invite") != filters.is_invite:
        return False
    if filters.spaces is not None and not any(
        room.room_id in ctx.space_children.get(space, ()) for space in filters.spaces
    ):
        return False
    if filters.room_types is not None and room.room_type not in filters.room_types:
        return False
    if room.room_type in filters.not_room_types:
        return False
    if filters.tags is None and not filters.not_tags:
        return True
    tags = ctx.tags.get(room.room_id, _NO_TAGS)
    if filters.tags is not None and tags.isdisjoint(filters.tags):
        return False
    return tags.isdisjoint(filters.not_tags)


NO_FILTERS = ListFilters()


def window(rooms: Sequence[UserRoom], request: ListRequest, ctx: ListContext) -> Window:
    """The list's count and, per range (inclusive at both ends), its rooms."""
    if request.filters == NO_FILTERS:
        kept = [room.room_id for room in rooms]
    else:
        kept = [room.room_id for room in rooms if matches(room, request.filters, ctx)]
    ops = []
    in_windows: list[str] = []
    for start, end in request.ranges:
        ids = kept[start : end + 1]
        ops.append({"op": "SYNC", "range": [start, end], "room_ids": ids})
        in_windows.extend(ids)
    return Window(len(kept), ops, in_windows)
