"""Read receipts and the read marker.

`m.read` receipts are public to the room, `m.read.private` ones only to their
owner; both live in the receipts table on the `receipts` stream, and never move
back to an earlier event. `m.fully_read` is not a receipt: it is the room account
data the spec calls the read marker, kept here because clients set it through the
receipt and read_markers endpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import forbidden, invalid_param, not_found
from homeserver.services.core.listeners import Listeners
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.accounts import account_data
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.ephemeral import receipts
from homeserver.storage.rooms import memberships

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE)
MAIN_THREAD = "main"
# How many relations a threaded receipt's event may be away from its thread root
# (a reaction to a reply in the thread is two).
MAX_THREAD_HOPS = 3


def _check_event_id(event_id: Any, what: str) -> str:
    if not isinstance(event_id, str) or not event_id.startswith("$"):
        raise invalid_param(f"{what} must be an event ID")
    return event_id


class ReceiptService:
    """`hs.receipts`: receipts and read markers from clients, and receipts for sync."""

    def __init__(self, db: Database, allocator: StreamAllocator, notifier: Notifier) -> None:
        self.db = db
        self.allocator = allocator
        self.notifier = notifier
        self._listeners: Listeners[[receipts.ReceiptRow]] = Listeners()

    def add_listener(self, listener: Callable[[receipts.ReceiptRow], Awaitable[None]]) -> None:
        """Told of every receipt stored (federation sends our users' public ones out)."""
        self._listeners.add(listener)

    async def send_receipt(
        self,
        requester: Requester,
        room_id: str,
        receipt_type: str,
        event_id: str,
        body: Mapping[str, Any],
    ) -> None:
        """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}."""
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise invalid_param(f"Receipt type must be one of {READ}, {READ_PRIVATE}, {FULLY_READ}")
        _check_event_id(event_id, "The receipted event")
        thread_id = body.get("thread_id")
        if thread_id is not None:
            if receipt_type == FULLY_READ:
                raise invalid_param(f"{FULLY_READ} does not take a thread_id")
            if not isinstance(thread_id, str) or not thread_id:
                raise invalid_param("thread_id field must be a non-empty string")
            if thread_id != MAIN_THREAD:
                _check_event_id(thread_id, "thread_id")
        async with self.db.pool.connection() as conn:
            await self._check_joined(conn, requester.user_id, room_id)
            target = await self._target(conn, room_id, event_id)
            if isinstance(thread_id, str) and thread_id != MAIN_THREAD:
                await self._check_in_thread(conn, event_id, target, thread_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(requester.user_id, room_id, event_id, target)
            return
        await self._store(requester.user_id, room_id, receipt_type, event_id, thread_id, target)

    async def set_read_markers(
        self, requester: Requester, room_id: str, body: Mapping[str, Any]
    ) -> None:
        """POST /rooms/{roomId}/read_markers: the read marker and receipts in one call."""
        wanted = {
            key: _check_event_id(body[key], key)
            for key in (FULLY_READ, READ, READ_PRIVATE)
            if body.get(key) is not None
        }
        async with self.db.pool.connection() as conn:
            await self._check_joined(conn, requester.user_id, room_id)
            targets = {
                key: await self._target(conn, room_id, event_id) for key, event_id in wanted.items()
            }
        if FULLY_READ in wanted:
            await self._set_fully_read(
                requester.user_id, room_id, wanted[FULLY_READ], targets[FULLY_READ]
            )
        for receipt_type in RECEIPT_TYPES:
            if receipt_type in wanted:
                await self._store(
                    requester.user_id,
                    room_id,
                    receipt_type,
                    wanted[receipt_type],
                    None,
                    targets[receipt_type],
                )

    async def apply_remote(
        self, room_id: str, user_id: str, event_id: str, thread_id: str | None, ts: int | None
    ) -> None:
        """A public receipt from another server (checked by the caller): stored like ours,
        and never moved back. The event may be one we do not hold (yet)."""
        async with self.db.pool.connection() as conn:
            target = await receipts.receipt_target(conn, event_id)
        if target is not None and target.room_id != room_id:
            return
        await self._store(user_id, room_id, READ, event_id, thread_id, target, ts)

    async def receipts_for_rooms(
        self,
        conn: Connection,
        room_ids: Sequence[str],
        from_pos: int,
        to_pos: int,
        user_id: str,
    ) -> dict[str, dict[str, Any]]:
        """Per room, the content of an m.receipt event with the receipts at positions in
        (from_pos, to_pos]; from 0 that is every user's latest receipt. Private receipts
        appear only when they are `user_id`'s own."""
        rows = await receipts.receipts_in_rooms(
            conn, room_ids, from_pos, to_pos, user_id, READ_PRIVATE
        )
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            receipt: dict[str, Any] = {"ts": row.ts}
            if row.thread_id != receipts.UNTHREADED:
                receipt["thread_id"] = row.thread_id
            by_event = out.setdefault(row.room_id, {}).setdefault(row.event_id, {})
            by_event.setdefault(row.receipt_type, {})[row.user_id] = receipt
        return out

    @staticmethod
    async def _check_joined(conn: Connection, user_id: str, room_id: str) -> None:
        membership = await memberships.get_membership(conn, room_id, user_id)
        if membership is None or membership.membership != "join":
            raise forbidden("You are not joined to this room")

    @staticmethod
    async def _target(conn: Connection, room_id: str, event_id: str) -> receipts.ReceiptTarget:
        target = await receipts.receipt_target(conn, event_id)
        if target is None or target.room_id != room_id:
            raise not_found(f"Unknown event {event_id} in room {room_id}")
        return target

    @staticmethod
    async def _check_in_thread(
        conn: Connection, event_id: str, target: receipts.ReceiptTarget, thread_id: str
    ) -> None:
        """The event must be the thread's root or relate to it (through a few hops)."""
        current_id: str = event_id
        current: receipts.ReceiptTarget | None = target
        for _ in range(MAX_THREAD_HOPS + 1):
            if current_id == thread_id:
                return
            if current is None or current.relates_to is None:
                break
            current_id = current.relates_to
            current = await receipts.receipt_target(conn, current_id)
        raise invalid_param(f"{event_id} is not part of thread {thread_id}")

    async def _set_fully_read(
        self, user_id: str, room_id: str, event_id: str, target: receipts.ReceiptTarget
    ) -> None:
        """Move the read marker forward (never back) in the room's account data."""
        [position] = await self.allocator.allocate(account_data.STREAM)
        try:
            async with self.db.pool.connection() as conn, conn.transaction():
                await account_data.lock_user(conn, user_id)
                moved = await self._marker_moves(conn, user_id, room_id, target)
                if moved:
                    await account_data.put_account_data(
                        conn, user_id, room_id, FULLY_READ, {"event_id": event_id}, position
                    )
                await streams.finish(conn, account_data.STREAM, [position])
        except BaseException:
            await self.allocator.abandon(account_data.STREAM, [position])
            raise
        if moved:
            await self.notifier.notify(account_data.STREAM, position, users=[user_id])

    @staticmethod
    async def _marker_moves(
        conn: Connection, user_id: str, room_id: str, target: receipts.ReceiptTarget
    ) -> bool:
        old = await account_data.get_account_data(conn, user_id, room_id, FULLY_READ)
        old_id = old.get("event_id") if old else None
        if not isinstance(old_id, str) or target.stream_ordering is None:
            return True
        old_target = await receipts.receipt_target(conn, old_id)
        return (
            old_target is None
            or old_target.stream_ordering is None
            or old_target.stream_ordering < target.stream_ordering
        )

    async def _store(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None,
        target: receipts.ReceiptTarget | None,
        ts: int | None = None,
    ) -> None:
        [position] = await self.allocator.allocate("receipts")
        row = receipts.ReceiptRow(
            room_id=room_id,
            receipt_type=receipt_type,
            user_id=user_id,
            thread_id=thread_id if thread_id is not None else receipts.UNTHREADED,
            event_id=event_id,
            ts=ts if ts is not None else now_ms(),
            stream_id=position,
        )
        try:
            async with self.db.pool.connection() as conn, conn.transaction():
                stored = await receipts.upsert_receipt(
                    conn, row, target.stream_ordering if target is not None else None
                )
                await streams.finish(conn, "receipts", [position])
        except BaseException:
            await self.allocator.abandon("receipts", [position])
            raise
        if stored:
            if receipt_type == READ_PRIVATE:
                await self.notifier.notify("receipts", position, users=[user_id])
            else:
                await self.notifier.notify("receipts", position, rooms=[room_id])
            await self._listeners.notify(row)
