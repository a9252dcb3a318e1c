"""Delayed events (MSC4140): a message or state event the server sends for a user
later, unless the user restarts the delay (a heartbeat) or cancels it. MatrixRTC
schedules the leave of a call member this way, so that a client that vanishes still
leaves the call.

Rows live in PostgreSQL, so a delayed event outlives a restart. Every process runs the
same loop: it sleeps until the earliest row is due (or a poll interval, which picks up
rows another process scheduled and then died), then fires due rows one at a time,
each in a transaction that holds the row's lock while its event is sent: whichever
process takes a row first fires it, and nobody else does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from federation import canonical_json
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import (
    ServiceError,
    database_unavailable,
    invalid_param,
    not_found,
)
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.rooms.send import MAX_ID_BYTES, SendService
from homeserver.services.rooms.writer import RoomWriter
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.rooms import delayed_events as store
from homeserver.storage.rooms.delayed_events import DelayedEvent

log = logging.getLogger(__name__)

UNSTABLE_FEATURE = "org.matrix.msc4140"
ACTIONS = ("restart", "cancel", "send")
# How often a process looks for due rows it was not told about (scheduled by a process
# that has since stopped); rows it scheduled itself wake it at their time.
POLL_INTERVAL_S = 5.0
# After an error (the database away), before the loop tries again.
RETRY_AFTER_S = 1.0
# How long a stop waits for the event being sent.
CLOSE_GRACE_S = 5.0
_LEFT = ("leave", "ban")


def delay_exceeded(max_delay_ms: int) -> ServiceError:
    """Synapse's shape, which matrix-js-sdk reads to shorten its delay and try again."""
    return ServiceError(
        400,
        "M_UNKNOWN",
        "The requested delay exceeds the allowed maximum",
        **{
            "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
            "org.matrix.msc4140.max_delay": max_delay_ms,
        },
    )


class DelayedEvents:
    def __init__(self, db: Database, send: SendService, max_delay_ms: int) -> None:
        self.db = db
        self.send = send
        # 0: delayed events are off
        self.max_delay_ms = max_delay_ms
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.max_delay_ms > 0

    async def schedule(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay_ms: int,
        state_key: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Store the event to be sent in `delay_ms`; its delay id. A message's `txn_id`
        makes a retransmission of the same request answer the first delay id."""
        if not self.enabled:
            raise ServiceError(400, "M_UNRECOGNIZED", "Delayed events are not enabled")
        if delay_ms > self.max_delay_ms:
            raise delay_exceeded(self.max_delay_ms)
        if requester.is_guest:
            raise ServiceError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot delay events")
        if event_type == "m.room.member" and state_key is not None:
            raise invalid_param("Membership changes cannot be delayed")
        if not event_type or len(event_type.encode()) > MAX_ID_BYTES:
            raise invalid_param(f"Event type must be 1 to {MAX_ID_BYTES} bytes")
        if state_key is not None and len(state_key.encode()) > MAX_ID_BYTES:
            raise invalid_param(f"State key must be at most {MAX_ID_BYTES} bytes")
        ensure_storable(content, "Event content")
        # Refused now rather than when it is due (CanonicalJsonError: 400 M_BAD_JSON).
        canonical_json.check(content)
        now = now_ms()
        delay_id = "syd_" + secrets.token_urlsafe(18)
        row = DelayedEvent(
            delay_id=delay_id,
            user_id=requester.user_id,
            device_id=requester.device_id,
            room_id=room_id,
            event_type=event_type,
            state_key=state_key,
            content=dict(content),
            delay_ms=delay_ms,
            running_since=now,
            send_ts=now + delay_ms,
        )
        async with self.db.pool.connection() as conn, conn.transaction():
            if txn_id is not None:
                scope = f"{room_id}/send/{event_type}"
                first = await store.claim_txn(
                    conn, requester.user_id, requester.device_id, scope, txn_id, delay_id
                )
                if first != delay_id:
                    return first
            await store.insert(conn, row)
        self._wake.set()
        return delay_id

    async def pending(self, requester: Requester) -> list[dict[str, Any]]:
        """The user's pending delayed events, in the shape Synapse lists them."""
        async with self.db.pool.connection() as conn:
            rows = await store.for_user(conn, requester.user_id)
        listed = []
        for row in rows:
            item: dict[str, Any] = {
                "delay_id": row.delay_id,
                "room_id": row.room_id,
                "type": row.event_type,
                "delay": row.delay_ms,
                "running_since": row.running_since,
                "content": row.content,
            }
            if row.state_key is not None:
                item["state_key"] = row.state_key
            listed.append(item)
        return listed

    async def update(self, owner: str | None, delay_id: str, action: str) -> None:
        """Restart, cancel or send now a delayed event: one of `owner`'s, or with no
        owner (the unauthenticated form) whichever the delay id names."""
        if action not in ACTIONS:
            raise invalid_param("action must be one of " + ", ".join(ACTIONS))
        async with self.db.pool.connection() as conn:
            if action == "restart":
                found = await store.restart(conn, owner, delay_id, now_ms())
                self._wake.set()
            elif action == "cancel":
                found = await store.delete(conn, owner, delay_id)
            else:
                async with conn.transaction():
                    row = await store.lock_own(conn, owner, delay_id)
                    error = None if row is None else await self._fire(conn, row)
                found = row is not None
                if error is not None:
                    raise error
        if not found:
            raise not_found("No such delayed event")

    async def _fire(self, conn: Connection, row: DelayedEvent) -> ServiceError | None:
        """Send a locked row's event as its user, then drop the row: sent, or refused (a
        refusal now will not turn into a success later, and a row that kept failing
        would hold back every row due after it). Only a database outage keeps the row,
        for the next attempt."""
        requester = Requester(
            user_id=row.user_id, device_id=row.device_id, token_id=0, is_admin=False, is_guest=False
        )
        error = None
        try:
            await self.send.send(
                requester, row.room_id, row.event_type, row.content, state_key=row.state_key
            )
        except ServiceError as exc:
            log.info("delayed event %s of %s refused: %s", row.delay_id, row.user_id, exc)
            error = exc
        except Exception as exc:
            if database_unavailable(exc):
                raise
            log.exception("delayed event %s of %s could not be sent", row.delay_id, row.user_id)
            error = ServiceError(500, "M_UNKNOWN", "The delayed event could not be sent")
        await store.delete(conn, row.user_id, row.delay_id)
        return error

    async def fire_due(self) -> int | None:
        """Fire every row due by now that no other process holds; the time the next
        row is due."""
        while not self._stopping:
            async with self.db.pool.connection() as conn:
                async with conn.transaction():
                    row = await store.lock_due(conn, now_ms())
                    if row is None:
                        return await store.next_send_ts(conn)
                    await self._fire(conn, row)
        return None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                next_ts = await self.fire_due()
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("firing delayed events failed; trying again")
                next_ts = now_ms() + int(RETRY_AFTER_S * 1000)
            wait = POLL_INTERVAL_S
            if next_ts is not None:
                wait = min(wait, max(0.0, (next_ts - now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def before_commit(self, writer: RoomWriter) -> None:
        """Events just written may make delayed ones moot: a member who left takes theirs
        along, and a state key set by someone else drops others' delayed values for it."""
        left: list[str] = []
        overwritten: dict[tuple[str, str], str] = {}
        for persisted in writer.persisted:
            event = persisted.event
            if event.state_key is None:
                continue
            overwritten[(event.type, event.state_key)] = event.sender
            if event.type == "m.room.member" and event.content.get("membership") in _LEFT:
                left.append(event.state_key)
        if left:
            await store.delete_of_members(writer.conn, writer.room_id, left)
        if overwritten:
            await store.delete_overwritten(writer.conn, writer.room_id, overwritten)

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="delayed-events")

    async def close(self) -> None:
        """Let an event being sent finish (cancelled mid-send, it could be sent again
        after a restart), within a grace period."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.wait({self._task}, timeout=CLOSE_GRACE_S)
        await cancel_and_wait([self._task])
        self._task = None
