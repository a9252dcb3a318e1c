"""Device-list tracking: who must re-fetch whose device keys.

A user's devices or keys changing is a row on the 'device_lists' stream; so is a user
starting or stopping being joined to a room, because that changes whose device lists
each member tracks. From these rows, `changes` answers a sync's question: between two
positions, whose device lists changed for this viewer, and who no longer shares any
room with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from homeserver.services.core.listeners import Listeners
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import device_lists as store


class DeviceLists:
    def __init__(self, db: Database, allocator: StreamAllocator, notifier: Notifier) -> None:
        self.db = db
        self.allocator = allocator
        self.notifier = notifier
        self._listeners: Listeners[[list[str]]] = Listeners()

    def add_listener(self, listener: Callable[[list[str]], Awaitable[None]]) -> None:
        """Told, after commit, whose devices or keys changed (federation announces them)."""
        self._listeners.add(listener)

    @asynccontextmanager
    async def transaction(self, user_ids: Sequence[str]) -> AsyncIterator[Connection]:
        """A transaction that changes these users' devices or keys: it records the change
        on the stream, and wakes the syncs of everyone sharing a room with them once it
        has committed."""
        users = list(dict.fromkeys(user_ids))
        [position] = await self.allocator.allocate("device_lists")
        try:
            async with self.db.pool.connection() as conn:
                async with conn.transaction():
                    yield conn
                    await store.add_user_changes(conn, position, users)
                    await streams.finish(conn, "device_lists", [position])
                rooms = await store.joined_rooms(conn, users)
        except BaseException:
            await self.allocator.abandon("device_lists", [position])
            raise
        await self.notifier.notify("device_lists", position, rooms=rooms, users=users)
        await self._listeners.notify(users)

    async def changes(
        self, conn: Connection, user_id: str, from_pos: int, to_pos: int
    ) -> tuple[list[str], list[str]]:
        """(changed, left) for `user_id` over positions (from_pos, to_pos]."""
        if to_pos <= from_pos:
            return [], []
        changed: list[str] = []
        left: list[str] = []
        for candidate in await store.change_candidates(conn, user_id, from_pos, to_pos):
            if candidate.user_id == user_id:
                if candidate.keys_changed:
                    changed.append(user_id)
            elif candidate.sharing:
                changed.append(candidate.user_id)
            elif candidate.moved:
                left.append(candidate.user_id)
        return sorted(changed), sorted(left)


async def record_membership(
    conn: Connection,
    allocator: StreamAllocator,
    room_id: str,
    user_id: str,
    membership: str,
) -> int | None:
    """Inside an event's transaction, before its membership is stored: when the user
    starts or stops being joined, record it on the device-list stream and return the
    position (which the caller finishes with its transaction, or abandons)."""
    joined = membership == "join"
    if await store.is_joined(conn, room_id, user_id) == joined:
        return None
    [position] = await allocator.allocate("device_lists")
    try:
        await store.add_room_change(conn, position, room_id, user_id, joined)
    except BaseException:
        await allocator.abandon("device_lists", [position])
        raise
    return position
