"""The events and state-group entries every reader and writer shares: immutable once
written, so kept in bounded LRUs and loaded through them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import orjson

from federation.events import Event
from federation.room_versions import get_room_version
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import state
from homeserver.storage.rooms.state import StateKey, StateMap


class EventCache:
    """Bounded LRUs of immutable room data: events by id (redaction is kept apart),
    and entries of state groups (a group never changes once written, so what it
    lacks it lacks for good: absent entries are cached too)."""

    def __init__(self, size: int = 10_000, entries: int = 50_000) -> None:
        self._size = size
        self._events: OrderedDict[str, Event] = OrderedDict()
        self._entries_size = entries
        self._entries: OrderedDict[tuple[int, StateKey], str | None] = OrderedDict()

    def get(self, event_id: str) -> Event | None:
        event = self._events.get(event_id)
        if event is not None:
            self._events.move_to_end(event_id)
        return event

    def put(self, event: Event) -> None:
        self._events[event.event_id] = event
        self._events.move_to_end(event.event_id)
        if len(self._events) > self._size:
            self._events.popitem(last=False)

    def state_entries(
        self, group: int, keys: Iterable[StateKey]
    ) -> tuple[StateMap, list[StateKey]]:
        """The cached entries of a group among `keys`, and the keys not cached."""
        found: StateMap = {}
        missing: list[StateKey] = []
        for key in keys:
            slot = (group, key)
            if slot not in self._entries:
                missing.append(key)
                continue
            self._entries.move_to_end(slot)
            event_id = self._entries[slot]
            if event_id is not None:
                found[key] = event_id
        return found, missing

    def put_state_entries(self, group: int, keys: Iterable[StateKey], found: StateMap) -> None:
        for key in keys:
            slot = (group, key)
            self._entries[slot] = found.get(key)
            self._entries.move_to_end(slot)
        while len(self._entries) > self._entries_size:
            self._entries.popitem(last=False)


def load_event(row: event_store.EventRow) -> Event:
    room_version = get_room_version(row.room_version)
    return Event(orjson.loads(row.json), room_version, row.event_id)


async def load_events(
    conn: Connection, cache: EventCache, event_ids: Iterable[str]
) -> dict[str, Event]:
    """Events by id, from the cache where possible; unknown ids are left out."""
    found: dict[str, Event] = {}
    missing: list[str] = []
    for event_id in event_ids:
        event = cache.get(event_id)
        if event is None:
            missing.append(event_id)
        else:
            found[event_id] = event
    if missing:
        for event_id, row in (await event_store.get_events(conn, missing)).items():
            event = load_event(row)
            cache.put(event)
            found[event_id] = event
    return found


async def state_entries(
    conn: Connection, cache: EventCache, groups: Iterable[int], keys: Iterable[StateKey]
) -> dict[int, StateMap]:
    """The given entries of many state groups, from the cache where possible: pages of
    events mostly share a few groups, so a reader of history asks for the same
    entries again and again."""
    key_list = list(dict.fromkeys(keys))
    out: dict[int, StateMap] = {}
    lacking: list[int] = []
    uncached: set[StateKey] = set()
    for group in set(groups):
        out[group], missing = cache.state_entries(group, key_list)
        if missing:
            lacking.append(group)
            uncached.update(missing)
    if lacking:
        fetched = await state.get_state_for_groups(conn, lacking, uncached)
        for group in lacking:
            entries = fetched.get(group, {})
            cache.put_state_entries(group, uncached, entries)
            out[group].update(entries)
    return out
