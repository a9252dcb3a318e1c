"""Wake-ups for long-polling syncs, within a process and across worker processes.

Writers call `notify(stream, position, rooms=..., users=...)` after their
transaction commits. A waiter is keyed by its user and the rooms it is in, so a
message wakes only the syncs of that room's members. A notification is delivered
only once the stream's safe position (see storage/core/streams.py) has reached it:
waking a sync that would then find nothing readable yet would cost a query and
still miss the event. Notifications also travel over PostgreSQL NOTIFY, so other
processes on the same database wake their own waiters; `broadcast`/`on` carry
in-memory state (typing) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, OperationalError, connect

log = logging.getLogger(__name__)

CHANNEL = "homeserver_notify"
# Raised by a trigger on access_tokens (schema/versions/0002_accounts.py).
TOKENS_CHANNEL = "homeserver_tokens"
_INSTANCE = f"{os.getpid()}-{id(object())}"

Handler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(eq=False)
class Waiter:
    user_id: str
    rooms: frozenset[str]
    woken: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Pending:
    stream: str
    position: int
    rooms: tuple[str, ...]
    users: tuple[str, ...]
    everyone: bool = False


class Notifier:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.positions: dict[str, int] = {}
        self._by_user: dict[str, set[Waiter]] = {}
        self._by_room: dict[str, set[Waiter]] = {}
        self._pending: list[_Pending] = []
        self._handlers: dict[str, Handler] = {}
        self._listener: asyncio.Task[None] | None = None
        # One connection blocks in LISTEN; the other publishes and reads positions.
        self._listen_conn: Connection | None = None
        self._conn: Connection | None = None
        self._refresh_lock = asyncio.Lock()

    async def start(self) -> None:
        """Read the current positions and start listening to other processes."""
        self._listen_conn = await connect(self.conninfo)
        await streams.listen(self._listen_conn, CHANNEL)
        await streams.listen(self._listen_conn, TOKENS_CHANNEL)
        self._conn = await connect(self.conninfo)
        self.positions = await streams.safe_positions(self._conn)
        self._listener = asyncio.create_task(self._listen(self._listen_conn))

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        for conn in (self._listen_conn, self._conn):
            if conn is not None:
                await conn.close()
        self._listen_conn = self._conn = None
        for waiters in self._by_user.values():
            for waiter in waiters:
                waiter.woken.set()

    async def _listen(self, conn: Connection) -> None:
        try:
            async for message in conn.notifies():
                if message.channel == TOKENS_CHANNEL:
                    handler = self._handlers.get("token_deleted")
                    if handler is not None:
                        await handler({"token_hash": message.payload})
                    continue
                try:
                    payload = orjson.loads(message.payload)
                except orjson.JSONDecodeError:
                    continue
                if payload.get("from") == _INSTANCE:
                    continue
                await self._receive(payload)
        except OperationalError:
            log.exception("lost the notification connection")

    async def _receive(self, payload: dict[str, Any]) -> None:
        kind = payload.get("kind")
        if kind == "stream":
            self._pending.append(
                _Pending(
                    payload["stream"],
                    int(payload["position"]),
                    tuple(payload.get("rooms", ())),
                    tuple(payload.get("users", ())),
                    bool(payload.get("all")),
                )
            )
            await self._refresh()
        elif isinstance(kind, str) and kind in self._handlers:
            await self._handlers[kind](payload)

    async def _refresh(self) -> None:
        """Re-read safe positions and deliver every pending notification they cover."""
        async with self._refresh_lock:
            if not self._pending or self._conn is None:
                return
            self.positions = await streams.safe_positions(self._conn)
            ready = [p for p in self._pending if p.position <= self.positions.get(p.stream, 0)]
            if not ready:
                return
            self._pending = [
                p for p in self._pending if p.position > self.positions.get(p.stream, 0)
            ]
        for item in ready:
            if item.everyone:
                self.wake(users=list(self._by_user))
            else:
                self.wake(rooms=item.rooms, users=item.users)

    def wake(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        """Wake the waiters of these rooms and users now (in-memory streams use this)."""
        for room_id in rooms:
            for waiter in self._by_room.get(room_id, ()):
                waiter.woken.set()
        for user_id in users:
            for waiter in self._by_user.get(user_id, ()):
                waiter.woken.set()

    async def notify(
        self,
        stream: str,
        position: int,
        *,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> None:
        """Announce a committed write at `position` of `stream`."""
        pending = _Pending(stream, position, tuple(rooms), tuple(users))
        self._pending.append(pending)
        await self._publish(
            {
                "kind": "stream",
                "stream": stream,
                "position": position,
                "rooms": pending.rooms,
                "users": pending.users,
            }
        )
        await self._refresh()

    async def broadcast(self, kind: str, payload: dict[str, Any]) -> None:
        """Send in-memory state to the other processes' handlers for `kind`."""
        await self._publish({"kind": kind, **payload})

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def _publish(self, payload: dict[str, Any]) -> None:
        if self._conn is None:
            return
        data = orjson.dumps({**payload, "from": _INSTANCE}).decode()
        if len(data) > 7900:
            # NOTIFY payloads are limited to 8000 bytes: fall back to waking everyone.
            summary = {k: payload.get(k) for k in ("kind", "stream", "position")}
            data = orjson.dumps({**summary, "from": _INSTANCE, "all": True}).decode()
        await streams.publish(self._conn, CHANNEL, data)

    async def wait(self, user_id: str, rooms: Iterable[str], seconds: float) -> bool:
        """Block until something for this user or these rooms is notified; False on timeout."""
        waiter = Waiter(user_id, frozenset(rooms))
        self._by_user.setdefault(user_id, set()).add(waiter)
        for room_id in waiter.rooms:
            self._by_room.setdefault(room_id, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter.woken.wait(), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            self._discard(waiter)

    def _discard(self, waiter: Waiter) -> None:
        users = self._by_user.get(waiter.user_id)
        if users is not None:
            users.discard(waiter)
            if not users:
                del self._by_user[waiter.user_id]
        for room_id in waiter.rooms:
            room_waiters = self._by_room.get(room_id)
            if room_waiters is not None:
                room_waiters.discard(waiter)
                if not room_waiters:
                    del self._by_room[room_id]

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._by_user.values())
