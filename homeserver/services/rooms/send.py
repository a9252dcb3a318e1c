"""Sending events from clients: messages, state and redactions, idempotent per txn id."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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
    RoomWriter,
    UnknownRoom,
)
from homeserver.storage.core.pool import Database, UniqueViolation
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import state

MAX_ID_BYTES = 255
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
    """One client's send, waiting for its room's next batch."""

    requester: Requester
    event_type: str
    content: Mapping[str, Any]
    txn_id: str | None
    # the request path below /rooms/ that the txn id is scoped to
    scope: str
    state_key: str | None
    # origin_server_ts an application service chose (None: now)
    ts: int | None
    future: asyncio.Future[tuple[str, PersistedEvent | None]]


def _txn_key(item: _Pending) -> tuple[str, str, str, str]:
    return (item.requester.user_id, item.requester.device_id, item.scope, item.txn_id or "")


class SendService:
    """Sends go through a queue per room: while one batch of a room is being written,
    the sends that arrive meanwhile wait and are then written together in one
    transaction, so a busy room pays one commit per batch rather than per message."""

    def __init__(self, db: Database, events: EventWriter) -> None:
        self.db = db
        self.events = events
        self._queues: dict[str, list[_Pending]] = {}

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
        services only: the caller checks)."""
        _check_ids(event_type, state_key)
        _check_nul(event_type, content)
        check_not_suspended(requester)
        if requester.shadow_banned:
            return shadow_event_id(), None
        check_own_acl(event_type, state_key, content, domain_of(requester.user_id))
        scope = f"{room_id}/{endpoint or f'send/{event_type}'}"
        pending = _Pending(
            requester,
            event_type,
            content,
            txn_id,
            scope,
            state_key,
            ts,
            asyncio.get_running_loop().create_future(),
        )
        queue = self._queues.get(room_id)
        if queue is not None:
            queue.append(pending)
            return await pending.future
        self._queues[room_id] = queue = [pending]
        batch: list[_Pending] = []
        try:
            while queue:
                batch = queue[:]
                queue.clear()
                await self._send_batch(room_id, batch)
        finally:
            del self._queues[room_id]
            # Only if this task was cancelled mid-batch: nobody else would answer these.
            self._fail(batch + queue, ServiceError(503, "M_UNKNOWN", "Send interrupted"))
        return pending.future.result()

    async def _send_batch(self, room_id: str, batch: list[_Pending]) -> None:
        """Write a batch in one transaction; each send gets its own result or error."""
        outcomes: dict[_Pending, PersistedEvent | str | BaseException] = {}
        try:
            async with self.events.writer(room_id) as writer:
                # Retransmissions, of earlier batches or within this one, get the first
                # answer: one read for the whole batch, in its transaction.
                keys = {item: _txn_key(item) for item in batch if item.txn_id is not None}
                sent = await event_store.get_txn_events(writer.conn, list(keys.values()))
                if len(batch) - len(sent) > 1:
                    await writer.reserve_positions(len(batch) - len(sent))
                for item in batch:
                    key = keys.get(item)
                    if key is not None and key in sent:
                        outcomes[item] = sent[key]
                        continue
                    try:
                        persisted = await self._send_one(writer, item)
                    except EventNotAllowed as exc:
                        outcomes[item] = forbidden(str(exc))
                        continue
                    except (ServiceError, CanonicalJsonError) as exc:
                        # Only this send fails; the others of the batch still go out.
                        outcomes[item] = exc
                        continue
                    outcomes[item] = persisted
                    if key is not None:
                        sent[key] = (
                            persisted if isinstance(persisted, str) else persisted.event.event_id
                        )
        except UnknownRoom:
            self._fail(batch, not_found(f"Unknown room {room_id}"))
            return
        except UniqueViolation:
            # A txn id raced with itself across batches: the first one won.
            if len(batch) > 1:
                for item in batch:
                    await self._send_batch(room_id, [item])
                return
            [item] = batch
            existing = await self._existing_txn(item.requester, item.scope, item.txn_id or "")
            if existing is None:
                self._fail(batch, ServiceError(500, "M_UNKNOWN", "Could not store the event"))
            else:
                item.future.set_result((existing, None))
            return
        except Exception as exc:
            self._fail(batch, exc)
            return
        for item, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            elif isinstance(outcome, str):
                item.future.set_result((outcome, None))
            else:
                item.future.set_result((outcome.event.event_id, outcome))

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _send_one(self, writer: RoomWriter, item: _Pending) -> PersistedEvent | str:
        """The new event, or the id of the current state it would repeat."""
        requester = item.requester
        if item.event_type == "m.room.redaction" and item.state_key is None:
            target = item.content.get("redacts")
            if not isinstance(target, str):
                raise ServiceError(400, "M_BAD_JSON", "Redactions need 'redacts'")
            persisted = await self._redact(writer, requester, target, item.content)
        else:
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
            persisted = await writer.append(
                item.event_type,
                requester.user_id,
                item.content,
                state_key=item.state_key,
                now_ms=item.ts,
            )
        if item.txn_id is not None:
            await event_store.insert_txn_event(
                writer.conn,
                requester.user_id,
                requester.device_id,
                item.scope,
                item.txn_id,
                persisted.event.event_id,
            )
        return persisted

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
            "m.room.redaction", requester.user_id, body, redacts=target_id
        )
        await event_store.mark_redacted(conn, target_id, persisted.event.event_id)
        return persisted
