"""Presence: online, unavailable (idle) or offline, derived from what users do.

Coming back (a sync after being offline), setting presence and acting (typing,
receipts, sending) make a user online; no activity for `IDLE_AFTER_MS` makes them
unavailable, and no sign of life (no sync) for `OFFLINE_AFTER_MS` offline. A
periodic sweep applies the timeouts. State changes take a position on the
`presence` stream; activity times are only touched (at most once a minute per user
and process, so syncs do not each cost a write) and turned into `last_active_ago`
when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, forbidden, invalid_param
from homeserver.services.core.listeners import Listeners
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.ephemeral import presence
from homeserver.storage.rooms import memberships

log = logging.getLogger(__name__)

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

IDLE_AFTER_MS = 5 * 60 * 1000
OFFLINE_AFTER_MS = 3 * 60 * 1000  # well above a long-poll plus TOUCH_INTERVAL_MS
TOUCH_INTERVAL_MS = 60 * 1000
CURRENTLY_ACTIVE_MS = 2 * TOUCH_INTERVAL_MS
REMOTE_TRUST_MS = 30 * 60 * 1000
SWEEP_INTERVAL_S = 30.0
SWEEP_BATCH = 500
MAX_STATUS_MSG_BYTES = 1024


class PresenceService:
    """`hs.presence`."""

    def __init__(
        self,
        db: Database,
        allocator: StreamAllocator,
        notifier: Notifier,
        *,
        enabled: bool,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.allocator = allocator
        self.notifier = notifier
        self.enabled = enabled
        self.clock = clock
        # user -> (state a sync asked for, when it was written): skips rewrites per sync.
        self._seen: dict[str, tuple[str, int]] = {}
        self._active: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._listeners: Listeners[[list[str]]] = Listeners()

    def add_listener(self, listener: Callable[[list[str]], Awaitable[None]]) -> None:
        """Told which users' presence changed (federation sends our users' out)."""
        self._listeners.add(listener)

    async def start(self) -> None:
        if self.enabled:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # Writers

    async def set_presence(
        self, user_id: str, presence_state: str, status_msg: str | None = None
    ) -> None:
        """An explicit change from the user: always a new position; online counts as activity."""
        if not self.enabled:
            return
        now = self.clock()
        async with self.db.pool.connection() as conn:
            old = await presence.get_presence(conn, user_id)
        last_active = now if presence_state == ONLINE or old is None else old.last_active_ts
        await self._write(user_id, presence_state, status_msg, last_active, now)
        self._seen[user_id] = (presence_state, now)
        if presence_state == ONLINE:
            self._active[user_id] = now

    async def user_synced(self, user_id: str, set_presence: str | None) -> None:
        """A sync arrived: a sign of life, and online unless the client says otherwise.

        `offline` is how a client syncs without being seen, so it changes nothing.
        Coming online from offline counts as activity; staying online does not (idle
        users who keep a client open become unavailable).
        """
        if not self.enabled or set_presence == OFFLINE:
            return
        wanted = set_presence if set_presence in (ONLINE, UNAVAILABLE) else ONLINE
        now = self.clock()
        cached = self._seen.get(user_id)
        if cached is not None and cached[0] == wanted and now - cached[1] < TOUCH_INTERVAL_MS:
            return
        async with self.db.pool.connection() as conn:
            old = await presence.get_presence(conn, user_id)
            if old is not None and (
                old.state == wanted or (old.state == UNAVAILABLE and wanted == ONLINE)
            ):
                await presence.touch(conn, user_id, now, None)
                self._seen[user_id] = (wanted, now)
                return
        status = old.status_msg if old is not None else None
        last_active = now if wanted == ONLINE or old is None else old.last_active_ts
        await self._write(user_id, wanted, status, last_active, now)
        self._seen[user_id] = (wanted, now)

    async def user_active(self, user_id: str) -> None:
        """The user did something (sent, typed, read): online, and active now."""
        if not self.enabled:
            return
        now = self.clock()
        last = self._active.get(user_id)
        if last is not None and now - last < TOUCH_INTERVAL_MS:
            return
        async with self.db.pool.connection() as conn:
            old = await presence.get_presence(conn, user_id)
            if old is not None and old.state == ONLINE:
                await presence.touch(conn, user_id, now, now)
                self._active[user_id] = now
                return
        await self._write(user_id, ONLINE, old.status_msg if old else None, now, now)
        self._active[user_id] = now
        self._seen[user_id] = (ONLINE, now)

    async def _write(
        self, user_id: str, state: str, status_msg: str | None, last_active: int, now: int
    ) -> None:
        [position] = await self.allocator.allocate("presence")
        row = presence.PresenceRow(user_id, state, status_msg, last_active, now, position)
        try:
            async with self.db.pool.connection() as conn:
                async with conn.transaction():
                    await presence.upsert_presence(conn, row)
                    await streams.finish(conn, "presence", [position])
                rooms = [m.room_id for m in await memberships.rooms_of_user(conn, user_id)]
        except BaseException:
            await self.allocator.abandon("presence", [position])
            raise
        await self.notifier.notify("presence", position, rooms=rooms, users=[user_id])
        await self._listeners.notify([user_id])

    async def apply_remote(
        self, user_id: str, state: str, status_msg: str | None, last_active_ago: int
    ) -> None:
        """Presence of a remote user, from their server (checked by the caller). Their
        server tells us of changes; if it goes quiet, the sweep takes them offline after
        `REMOTE_TRUST_MS` (the row looks seen until then)."""
        if not self.enabled:
            return
        now = self.clock()
        last_active = now - max(0, last_active_ago)
        seen_until = now + REMOTE_TRUST_MS - OFFLINE_AFTER_MS
        await self._write(user_id, state, status_msg, last_active, seen_until)

    # Timeouts

    async def sweep(self) -> int:
        """Apply the idle and offline timeouts once; how many users changed."""
        now = self.clock()
        async with self.db.pool.connection() as conn:
            stale = await presence.stale(
                conn, now - IDLE_AFTER_MS, now - OFFLINE_AFTER_MS, SWEEP_BATCH
            )
        for user_id in [u for u, (_, t) in self._seen.items() if now - t >= TOUCH_INTERVAL_MS]:
            del self._seen[user_id]
        for user_id in [u for u, t in self._active.items() if now - t >= TOUCH_INTERVAL_MS]:
            del self._active[user_id]
        if not stale:
            return 0
        positions = await self.allocator.allocate("presence", len(stale))
        changed: list[tuple[str, int]] = []
        try:
            async with self.db.pool.connection() as conn:
                async with conn.transaction():
                    for row, position in zip(stale, positions, strict=True):
                        state = (
                            OFFLINE if row.last_seen_ts < now - OFFLINE_AFTER_MS else UNAVAILABLE
                        )
                        if await presence.transition(conn, row, state, position):
                            changed.append((row.user_id, position))
                    await streams.finish(conn, "presence", positions)
                rooms = {
                    m.room_id
                    for user_id, _ in changed
                    for m in await memberships.rooms_of_user(conn, user_id)
                }
        except BaseException:
            await self.allocator.abandon("presence", positions)
            raise
        if changed:
            await self.notifier.notify(
                "presence",
                max(position for _, position in changed),
                rooms=rooms,
                users=[user_id for user_id, _ in changed],
            )
            await self._listeners.notify([user_id for user_id, _ in changed])
        return len(changed)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("presence sweep failed")

    # Readers

    def content(self, row: presence.PresenceRow | None, now: int) -> dict[str, Any]:
        if row is None:
            return {"presence": OFFLINE}
        content: dict[str, Any] = {
            "presence": row.state,
            "last_active_ago": max(0, now - row.last_active_ts),
        }
        if row.state == ONLINE:
            content["currently_active"] = now - row.last_active_ts < CURRENTLY_ACTIVE_MS
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        return content

    async def presence_events(
        self, conn: Connection, user_id: str, from_pos: int, to_pos: int
    ) -> list[dict[str, Any]]:
        """m.presence events of the user and of users sharing a room with them, changed
        at positions in (from_pos, to_pos]; from 0, the current presence of everyone
        not offline (clients take offline for granted)."""
        if not self.enabled:
            return []
        now = self.clock()
        rows = await presence.visible_changes(
            conn, user_id, from_pos, to_pos, include_offline=from_pos > 0
        )
        return [
            {"type": "m.presence", "sender": row.user_id, "content": self.content(row, now)}
            for row in rows
        ]

    async def current_presence(
        self, conn: Connection, user_ids: Sequence[str], up_to: int
    ) -> list[dict[str, Any]]:
        """m.presence events of these users as of position `up_to`, for a viewer who has
        just come to share a room with them: earlier changes never reached them."""
        if not self.enabled or not user_ids:
            return []
        now = self.clock()
        rows = await presence.current_of(conn, user_ids, up_to)
        return [
            {"type": "m.presence", "sender": row.user_id, "content": self.content(row, now)}
            for row in rows
        ]

    # Endpoints

    async def get_status(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status: yourself or someone you share a room with."""
        if not self.enabled:
            return {"presence": OFFLINE}
        async with self.db.pool.connection() as conn:
            if user_id != requester.user_id and not await presence.share_a_room(
                conn, requester.user_id, user_id
            ):
                raise forbidden("You are not allowed to see their presence")
            row = await presence.get_presence(conn, user_id)
        return self.content(row, self.clock())

    async def put_status(self, requester: Requester, user_id: str, body: dict[str, Any]) -> None:
        """PUT /presence/{userId}/status: only your own; ignored when presence is off."""
        if user_id != requester.user_id:
            raise forbidden("You cannot set the presence of another user")
        state = body.get("presence")
        if state is None:
            raise ServiceError(400, "M_BAD_JSON", "'presence' is required")
        if state not in STATES:
            raise invalid_param(f"'presence' must be one of {', '.join(STATES)}")
        status_msg = body.get("status_msg")
        if status_msg is not None:
            if not isinstance(status_msg, str):
                raise invalid_param("'status_msg' must be a string")
            if len(status_msg.encode()) > MAX_STATUS_MSG_BYTES:
                raise invalid_param(f"'status_msg' is longer than {MAX_STATUS_MSG_BYTES} bytes")
        await self.set_presence(user_id, state, status_msg)
