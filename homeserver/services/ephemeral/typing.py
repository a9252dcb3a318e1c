"""Typing notifications: in-memory state per room, with timeouts, on a position stream.

Typing is too short-lived to store. Every process keeps the whole state (changes
are replicated through `notifier.broadcast`) and its own position. Positions are
wall-clock milliseconds, bumped by one when changes come faster: they survive a
restart, and a sync token minted by one worker process means about the same
moment on another, so clients moving between processes miss nothing (apart from
changes still in flight between processes at that instant).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, forbidden
from homeserver.services.core.listeners import Listeners
from homeserver.services.core.notifier import Notifier
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import memberships

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000
CHANGE_LOG_SIZE = 10_000
BROADCAST_KIND = "typing"


class TypingState:
    """Who types where until when, and which rooms changed at which position.

    Pure (the clock is passed in), so the expiry logic is unit-testable.
    """

    def __init__(self, now: int, log_size: int = CHANGE_LOG_SIZE) -> None:
        self._rooms: dict[str, dict[str, int]] = {}  # room -> user -> expiry (ms)
        self._log: deque[tuple[int, str]] = deque(maxlen=log_size)
        self.position = now
        # Changes at or below `_floor` are forgotten (before start, or trimmed from the log).
        self._floor = now

    def _bump(self, room_id: str, now: int) -> None:
        self.position = max(self.position + 1, now)
        if len(self._log) == self._log.maxlen:
            self._floor = self._log[0][0]
        self._log.append((self.position, room_id))

    def update(self, room_id: str, user_id: str, expires_at: int | None, now: int) -> bool:
        """Start (expires_at set) or stop (None) typing; True when the room's list changed.

        Renewing a timeout changes nothing that clients see, so it moves no position.
        """
        users = self._rooms.get(room_id, {})
        was_typing = users.get(user_id, 0) > now
        if expires_at is not None and expires_at > now:
            self._rooms.setdefault(room_id, {})[user_id] = expires_at
            if was_typing:
                return False
        else:
            if user_id not in users:
                return False
            del users[user_id]
            if not users:
                del self._rooms[room_id]
            if not was_typing:
                return False
        self._bump(room_id, now)
        return True

    def expire(self, now: int) -> set[str]:
        """Drop timed-out typers; the rooms whose list changed."""
        changed: set[str] = set()
        for room_id, users in list(self._rooms.items()):
            for user_id, expires_at in list(users.items()):
                if expires_at <= now:
                    del users[user_id]
                    changed.add(room_id)
            if not users:
                del self._rooms[room_id]
        for room_id in sorted(changed):
            self._bump(room_id, now)
        return changed

    def next_expiry(self) -> int | None:
        return min((t for users in self._rooms.values() for t in users.values()), default=None)

    def typing_in(self, room_id: str, now: int) -> list[str]:
        return sorted(u for u, t in self._rooms.get(room_id, {}).items() if t > now)

    def rooms_changed_since(self, position: int) -> set[str]:
        if position >= self.position:
            return set()
        if position < self._floor:
            # Older than what we remember: every room with typers may have changed.
            return set(self._rooms)
        changed: set[str] = set()
        for pos, room_id in reversed(self._log):
            if pos <= position:
                break
            changed.add(room_id)
        return changed


class TypingService:
    """`hs.typing`: set typing, read it for sync, expire it, replicate it."""

    def __init__(self, db: Database, notifier: Notifier, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.notifier = notifier
        self._clock = clock
        self._state = TypingState(clock())
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: Listeners[[str, str, bool]] = Listeners()
        notifier.on(BROADCAST_KIND, self._received)

    def add_listener(self, listener: Callable[[str, str, bool], Awaitable[None]]) -> None:
        """Told (room, user, typing) of every change made here, remote users' included
        (federation sends our users' ones out)."""
        self._listeners.add(listener)

    @property
    def position(self) -> int:
        return self._state.position

    def typing_in(self, room_id: str) -> list[str]:
        return self._state.typing_in(room_id, self._clock())

    def rooms_changed_since(self, position: int) -> set[str]:
        return self._state.rooms_changed_since(position)

    async def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        """Apply a change here, wake the room's syncs, and tell the other processes."""
        now = self._clock()
        expires_at = now + timeout_ms if typing else None
        self._apply(room_id, user_id, expires_at, now)
        await self.notifier.broadcast(
            BROADCAST_KIND, {"room_id": room_id, "user_id": user_id, "expires_at": expires_at}
        )
        await self._listeners.notify(room_id, user_id, typing)

    async def user_typing(
        self, requester: Requester, room_id: str, user_id: str, body: dict[str, Any]
    ) -> None:
        """The checks of PUT /rooms/{roomId}/typing/{userId}, then `set_typing`."""
        if user_id != requester.user_id:
            raise forbidden("Cannot set the typing state of another user")
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise ServiceError(400, "M_BAD_JSON", "'typing' must be a boolean")
        timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
        if typing and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            raise ServiceError(400, "M_BAD_JSON", "'timeout' must be a non-negative integer")
        async with self.db.pool.connection() as conn:
            membership = await memberships.get_membership(conn, room_id, user_id)
        if membership is None or membership.membership != "join":
            raise forbidden("You are not joined to this room")
        await self.set_typing(room_id, user_id, typing, min(timeout, MAX_TIMEOUT_MS))

    async def _received(self, payload: dict[str, Any]) -> None:
        room_id, user_id = payload.get("room_id"), payload.get("user_id")
        expires_at = payload.get("expires_at")
        if not isinstance(room_id, str) or not isinstance(user_id, str):
            return
        if expires_at is not None and not isinstance(expires_at, int):
            return
        self._apply(room_id, user_id, expires_at, self._clock())

    def _apply(self, room_id: str, user_id: str, expires_at: int | None, now: int) -> None:
        if self._state.update(room_id, user_id, expires_at, now):
            self.notifier.wake(rooms=[room_id])
        self._schedule()

    def _schedule(self) -> None:
        """Keep one timer, for the earliest expiry."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._state.next_expiry()
        if due is not None:
            delay = max(0.0, (due - self._clock()) / 1000)
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        changed = self._state.expire(self._clock())
        if changed:
            self.notifier.wake(rooms=changed)
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
