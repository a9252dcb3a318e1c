"""One lock per room for the events other servers bring: incoming transactions, joins
through another server, the resident side of other servers' joins, and backfill take
it, so that a room's gaps are filled once and its state moves one event at a time."""

from __future__ import annotations

import asyncio
import weakref


class RoomLocks:
    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def room_lock(self, room_id: str) -> asyncio.Lock:
        """Serialises the handling of one room's incoming events."""
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock
