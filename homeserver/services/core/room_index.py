"""Which users wait on which rooms: where a notification for a room finds its waiters.

A long-poll registers its user's rooms, is woken, answers, and its client comes
straight back with the same rooms (a `/sync` or sliding-sync loop). Adding a user in
thousands of rooms to the index and removing them again costs a dictionary update per
room each time, and the removal falls on the path of the answer that woke it. So a
user's set of rooms stays indexed for a while after its last waiter ends (`LINGER_S`):
a long-poll that comes back with the same set (the same object, or an equal one)
registers in constant time. A set no waiter holds wakes nobody meanwhile (the notifier
looks for the user's waiters), and goes once another set of the user is registered
(their memberships moved) or the time is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

# How long a user's rooms stay indexed after their last long-poll ends.
LINGER_S = 30.0


@dataclass(eq=False, slots=True)
class _Registered:
    rooms: frozenset[str]
    waiters: int = 0
    expiry: asyncio.TimerHandle | None = None


class RoomIndex:
    def __init__(self) -> None:
        # Per room, the users with a registered set holding it, and how many sets each.
        self._by_room: dict[str, dict[str, int]] = {}
        self._by_user: dict[str, list[_Registered]] = {}

    def users_in(self, room_id: str) -> Iterable[str]:
        return self._by_room.get(room_id, ())

    def shared(self, user_id: str, rooms: frozenset[str]) -> frozenset[str]:
        """`rooms`, or the equal set already registered for this user: a caller that
        keeps the result holds no copy of its own."""
        found = self._find(user_id, rooms)
        return rooms if found is None else found.rooms

    def hold(self, user_id: str, rooms: frozenset[str]) -> frozenset[str]:
        """Register `rooms` for one more waiter of the user; returns the registered set
        (equal to `rooms`), which the waiter keeps and gives back to `release`."""
        found = self._find(user_id, rooms)
        if found is None:
            for stale in [r for r in self._by_user.get(user_id, ()) if not r.waiters]:
                self._remove(user_id, stale)
            found = _Registered(rooms)
            self._by_user.setdefault(user_id, []).append(found)
            for room_id in rooms:
                counts = self._by_room.setdefault(room_id, {})
                counts[user_id] = counts.get(user_id, 0) + 1
        elif found.expiry is not None:
            found.expiry.cancel()
            found.expiry = None
        found.waiters += 1
        return found.rooms

    def release(self, user_id: str, rooms: frozenset[str]) -> None:
        """One waiter holding `rooms` (as `hold` returned it) has ended."""
        for registered in self._by_user.get(user_id, ()):
            if registered.rooms is rooms:
                registered.waiters -= 1
                if not registered.waiters:
                    registered.expiry = asyncio.get_running_loop().call_later(
                        LINGER_S, self._remove, user_id, registered
                    )
                return

    def close(self) -> None:
        for registered in [r for regs in self._by_user.values() for r in regs]:
            if registered.expiry is not None:
                registered.expiry.cancel()
        self._by_user.clear()
        self._by_room.clear()

    @property
    def users(self) -> int:
        """Users with rooms indexed (waiting, or lingering)."""
        return len(self._by_user)

    def _find(self, user_id: str, rooms: frozenset[str]) -> _Registered | None:
        for registered in self._by_user.get(user_id, ()):
            if registered.rooms is rooms or registered.rooms == rooms:
                return registered
        return None

    def _remove(self, user_id: str, registered: _Registered) -> None:
        if registered.expiry is not None:
            registered.expiry.cancel()
        regs = self._by_user[user_id]
        regs.remove(registered)
        if not regs:
            del self._by_user[user_id]
        for room_id in registered.rooms:
            counts = self._by_room[room_id]
            counts[user_id] -= 1
            if not counts[user_id]:
                del counts[user_id]
                if not counts:
                    del self._by_room[room_id]
