"""Sending events from clients: messages, state and redactions, idempotent per txn id."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from federation.canonical_json import CanonicalJsonError
from federation.identifiers import domain_of
from federation.power_levels import named_level, user_level
from homeserver.services.accounts.auth import Requester, check_not_suspended, shadow_event_id
from homeserver.services.core.errors import ServiceError, forbidden, not_found
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.directory.rooms import CANONICAL_ALIAS, check_canonical_alias
from homeserver.services.rooms.event_cache import load_events
from homeserver.services.rooms.server_acl import check_own_acl, is_acl_event
from homeserver.services.rooms.writer import (
    EventNotAllowed,
    EventWriter,
    PersistedEvent,
    RoomGroup,
    RoomWriter,
)
from homeserver.storage.core.pool import Database, UniqueViolation
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import state

MAX_ID_BYTES = 255
# Groups of sends written at once: one being built while those before it commit.
MAX_GROUPS_IN_FLIGHT = 3
# Membership changes go through the membership endpoints so that their checks apply.
_MEMBERSHIP_ONLY = "m.room.member"


def _check_ids(event_type: str, state_key: str | None) -> None:
    """The path's parameters, refused as such (the writer refuses events too large)."""
    if not event_type or len(event_type.encode()) > MAX_ID_BYTES:
        raise ServiceError(400, "M_INVALID_PARAM", "Event type must be 1 to 255 bytes")
    if state_key is not None and len(state_key.encode()) > MAX_ID_BYTES:
        raise ServiceError(400, "M_INVALID_PARAM", "State key must be at most 255 bytes")


def _check_nul(event_type: str, content: Mapping[str, Any]) -> None:
    """Message content may hold U+0000, as on other servers (the event is stored as
    JSON text), except where it names other events: relations and redactions fill
    columns and queries that PostgreSQL cannot give U+0000 to."""
    ensure_storable(content.get("m.relates_to"), "m.relates_to")
    if event_type == "m.room.redaction":
        ensure_storable(content, "Redaction content")


@dataclass(eq=False)
class _Pending:
    """One client's send, waiting for the next group commit."""

    requester: Requester
    room_id: str
    event_type: str
    content: Mapping[str, Any]
    txn_id: str | None
    # the request path below /rooms/ that the txn id is scoped to
    scope: str
    state_key: str | None
    # origin_server_ts an application service chose (None: now)
    ts: int | None
    future: asyncio.Future[tuple[str, PersistedEvent | None]]


def _txn_key(item: _Pending) -> event_store.TxnKey:
    return (item.requester.user_id, item.requester.device_id, item.scope, item.txn_id or "")


def _split(batch: list[_Pending]) -> list[list[_Pending]]:
    """A failed group, retried smaller: room by room, and a room's sends one by one."""
    by_room: dict[str, list[_Pending]] = {}
    for item in batch:
        by_room.setdefault(item.room_id, []).append(item)
    if len(by_room) > 1:
        return list(by_room.values())
    return [[item] for item in batch]


Outcome = PersistedEvent | str | BaseException


def _interrupted() -> ServiceError:
    return ServiceError(503, "M_UNKNOWN", "Send interrupted")


class SendService:
    """Group commit: sends wait in one queue, for all rooms. When none is being written,
    the first send starts a group at once (no added latency when idle); those that
    arrive while a group is written wait and then go together, rooms and requests
    alike, in one transaction and one commit (`EventWriter.writers`). The commit rate
    of the database then caps groups per second, not messages.

    The next group is made as soon as the one before has sent its commit: building
    it (signing, auth, statements) overlaps that group's wait for the disk and its
    after-commit work. Sends into the rooms of a group still in flight go aside and
    follow it, in order."""

    def __init__(self, db: Database, events: EventWriter) -> None:
        self.db = db
        self.events = events
        self._queue: list[_Pending] = []
        self._leader: asyncio.Task[None] | None = None
        # Sends into rooms another writer held when their group was made, in order, and
        # the tasks writing them
        self._aside: dict[str, list[_Pending]] = {}
        self._aside_tasks: set[asyncio.Task[None]] = set()
        # Groups in flight: one being built, the others committing.
        self._groups: set[asyncio.Task[None]] = set()

    async def _existing_txn(self, requester: Requester, scope: str, txn_id: str) -> str | None:
        async with self.db.pool.connection() as conn:
            return await event_store.get_txn_event(
                conn, requester.user_id, requester.device_id, scope, txn_id
            )

    async def send(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        txn_id: str | None = None,
        state_key: str | None = None,
        endpoint: str | None = None,
        ts: int | None = None,
    ) -> tuple[str, PersistedEvent | None]:
        """The event id, and the new event unless this is a retransmission: the same
        device sent the same txn id to the same path (`endpoint`, below the room; the
        event type's send path by default). `ts` dates the event (application
        services only: the caller checks). Answered once the event is committed."""
        _check_ids(event_type, state_key)
        _check_nul(event_type, content)
        check_not_suspended(requester)
        if requester.shadow_banned:
            return shadow_event_id(), None
        check_own_acl(event_type, state_key, content, domain_of(requester.user_id))
        scope = f"{room_id}/{endpoint or f'send/{event_type}'}"
        pending = _Pending(
            requester,
            room_id,
            event_type,
            content,
            txn_id,
            scope,
            state_key,
            ts,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(pending)
        if self._leader is None:
            # A task of its own: a client that goes away does not interrupt the others.
            self._leader = asyncio.create_task(self._lead(), name="send-group-commit")
        return await asyncio.shield(pending.future)

    async def _lead(self) -> None:
        """Make groups until the queue is empty, each once the one before it has sent
        its commit (or ended)."""
        try:
            while self._queue:
                if len(self._groups) >= MAX_GROUPS_IN_FLIGHT:
                    await asyncio.wait(self._groups, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = self._take()
                if not batch:
                    continue
                committing = asyncio.Event()
                group = asyncio.create_task(self._write_group_of(batch, committing))
                self._groups.add(group)
                group.add_done_callback(self._groups.discard)
                sent = asyncio.create_task(committing.wait())
                try:
                    await asyncio.wait({group, sent}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sent.cancel()
        finally:
            self._leader = None
            self._fail(self._queue, _interrupted())
            self._queue.clear()

    async def _write_group_of(self, batch: list[_Pending], committing: asyncio.Event) -> None:
        try:
            await self._send_group(batch, committing.set)
        finally:
            # Only if this task was cancelled mid-group: nobody else would answer.
            self._fail(batch, _interrupted())

    async def _write_batches(self, batch: list[_Pending], queue: list[_Pending]) -> None:
        """Write `batch`, then what `queue` holds meanwhile, one group at a time."""
        while batch:
            try:
                await self._send_group(batch)
            finally:
                # Only if this task was cancelled mid-group: nobody else would answer.
                self._fail(batch, _interrupted())
            batch = queue[:]
            queue.clear()

    def _take(self) -> list[_Pending]:
        """The queued sends for the next group. Those into a room that another writer
        holds (a join storing a large state can take seconds) are written on their own,
        in order, so that they do not hold up the sends into every other room."""
        batch: list[_Pending] = []
        for item in self._queue:
            room_id = item.room_id
            aside = self._aside.get(room_id)
            if aside is None and not self.events.busy(room_id):
                batch.append(item)
                continue
            if aside is None:
                self._aside[room_id] = aside = []
                task = asyncio.create_task(self._write_aside(room_id, aside))
                self._aside_tasks.add(task)
                task.add_done_callback(self._aside_tasks.discard)
            aside.append(item)
        self._queue.clear()
        return batch

    async def _write_aside(self, room_id: str, queue: list[_Pending]) -> None:
        batch = queue[:]
        queue.clear()
        try:
            await self._write_batches(batch, queue)
        finally:
            del self._aside[room_id]
            self._fail(queue, _interrupted())

    async def close(self) -> None:
        """Let the groups being written finish, so that what they answer is what they
        stored."""
        tasks = {*self._aside_tasks, *self._groups, *([self._leader] if self._leader else [])}
        if tasks:
            await asyncio.wait(tasks)

    async def _send_group(
        self, batch: list[_Pending], committing: Callable[[], None] | None = None
    ) -> None:
        """Write a group in one transaction; each send gets its own result or error. If
        the transaction fails, the group is retried room by room, then one by one, so
        that one bad send costs only itself. `committing` is called when the commit is
        sent (the first that gets there, if the group is retried)."""
        outcomes: dict[_Pending, Outcome] = {}
        # Retransmissions, of earlier groups or within this one, get the first answer:
        # one read for the whole group, in its transaction, answered with the rooms.
        keys = {item: _txn_key(item) for item in batch if item.txn_id is not None}
        lookup = functools.partial(event_store.queue_txn_events, keys=list(keys.values()))
        try:
            rooms = [item.room_id for item in batch]
            async with self.events.writers(rooms, lookup, committing=committing) as (group, read):
                await self._write_group(group, batch, keys, await read(), outcomes)
        except Exception as exc:
            if len(batch) > 1:
                for part in _split(batch):
                    await self._send_group(part, committing)
            else:
                await self._failed_alone(batch[0], exc)
            return
        for item, outcome in outcomes.items():
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            elif isinstance(outcome, str):
                item.future.set_result((outcome, None))
            else:
                item.future.set_result((outcome.event.event_id, outcome))

    async def _write_group(
        self,
        group: RoomGroup,
        batch: list[_Pending],
        keys: dict[_Pending, event_store.TxnKey],
        sent: dict[event_store.TxnKey, str],
        outcomes: dict[_Pending, Outcome],
    ) -> None:
        # Positions for every send at once: those a retransmission leaves unused are
        # finished empty with the commit.
        wanted = sum(1 for item in batch if item.room_id in group.writers)
        if wanted > 1:
            await next(iter(group.writers.values())).reserve_positions(wanted)
        for item in batch:
            writer = group.writers.get(item.room_id)
            key = keys.get(item)
            if writer is None:
                outcomes[item] = not_found(f"Unknown room {item.room_id}")
                continue
            if key is not None and key in sent:
                outcomes[item] = sent[key]
                continue
            try:
                persisted = await self._send_one(writer, item)
            except EventNotAllowed as exc:
                outcomes[item] = forbidden(str(exc))
                continue
            except (ServiceError, CanonicalJsonError) as exc:
                # Only this send fails; the others of the group still go out.
                outcomes[item] = exc
                continue
            outcomes[item] = persisted
            if key is not None:
                sent[key] = persisted if isinstance(persisted, str) else persisted.event.event_id

    async def _failed_alone(self, item: _Pending, exc: Exception) -> None:
        """A send whose own transaction failed: a txn id that raced with itself (in
        another process) gets the first answer; anything else fails the request."""
        if isinstance(exc, UniqueViolation) and item.txn_id is not None:
            existing = await self._existing_txn(item.requester, item.scope, item.txn_id)
            if existing is not None:
                item.future.set_result((existing, None))
                return
            exc = ServiceError(500, "M_UNKNOWN", "Could not store the event")
        if not item.future.done():
            item.future.set_exception(exc)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _send_one(self, writer: RoomWriter, item: _Pending) -> PersistedEvent | str:
        """The new event, or the id of the current state it would repeat."""
        requester = item.requester
        # The txn id is stored with the event, in its statement: one taken meanwhile by
        # another process fails the group, which is retried smaller.
        txn = _txn_key(item) if item.txn_id is not None else None
        if item.event_type == "m.room.redaction" and item.state_key is None:
            target = item.content.get("redacts")
            if not isinstance(target, str):
                raise ServiceError(400, "M_BAD_JSON", "Redactions need 'redacts'")
            return await self._redact(writer, requester, target, item.content, txn)
        if item.state_key is not None and item.event_type == _MEMBERSHIP_ONLY:
            self._check_member_event(requester, item.state_key, item.content)
        if item.state_key is not None:
            unchanged = await writer.unchanged(
                item.event_type, item.state_key, requester.user_id, item.content
            )
            if unchanged is not None:
                return unchanged
        if item.state_key == "" and item.event_type == CANONICAL_ALIAS:
            await check_canonical_alias(writer.conn, writer.cache, writer.room_id, item.content)
        return await writer.append(
            item.event_type,
            requester.user_id,
            item.content,
            state_key=item.state_key,
            now_ms=item.ts,
            txn=txn,
        )

    @staticmethod
    def _check_member_event(
        requester: Requester, state_key: str, content: Mapping[str, Any]
    ) -> None:
        # Profile updates of one's own join are fine; other changes need their endpoint.
        if state_key != requester.user_id or content.get("membership") != "join":
            raise forbidden("Use the membership endpoints to change membership")

    async def redact(
        self,
        requester: Requester,
        room_id: str,
        target_id: str,
        reason: str | None,
        txn_id: str | None,
    ) -> tuple[str, PersistedEvent | None]:
        content: dict[str, Any] = {"redacts": target_id}
        if reason is not None:
            content["reason"] = reason
        return await self.send(
            requester,
            room_id,
            "m.room.redaction",
            content,
            txn_id=txn_id,
            endpoint=f"redact/{target_id}",
        )

    async def _redact(
        self,
        writer: RoomWriter,
        requester: Requester,
        target_id: str,
        content: Mapping[str, Any],
        txn: event_store.TxnKey | None,
    ) -> PersistedEvent:
        """Redactions are applied only when the sender may redact that event."""
        conn = writer.conn
        targets = await load_events(conn, writer.cache, [target_id])
        target = targets.get(target_id)
        if target is None or target.room_id != writer.room_id:
            raise not_found("Unknown event to redact")
        if is_acl_event(target.type, target.state_key):
            # Redacted, an ACL keeps no `allow`: every server, ours too, would be denied.
            raise forbidden("Server ACL events cannot be redacted")
        if target.sender != requester.user_id:
            ids = await state.get_current_state(
                conn, writer.room_id, [("m.room.create", ""), ("m.room.power_levels", "")]
            )
            found = await load_events(conn, writer.cache, ids.values())
            create = found.get(ids.get(("m.room.create", ""), ""))
            power = found.get(ids.get(("m.room.power_levels", ""), ""))
            if user_level(requester.user_id, create, power) < named_level(power, "redact"):
                raise forbidden("You may not redact other users' events")
        body = {k: v for k, v in content.items() if k != "redacts"}
        persisted = await writer.append(
            "m.room.redaction", requester.user_id, body, redacts=target_id, txn=txn
        )
        await event_store.mark_redacted(conn, target_id, persisted.event.event_id)
        return persisted
