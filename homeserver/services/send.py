"""Sending events from clients: messages, state and redactions, idempotent per txn id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from psycopg import errors as pg_errors

from federation.power_levels import named_level, user_level
from homeserver.services.auth import Requester
from homeserver.services.directory import CANONICAL_ALIAS, check_canonical_alias
from homeserver.services.errors import ServiceError, forbidden, not_found
from homeserver.services.events import (
    EventCreator,
    EventNotAllowed,
    PersistedEvent,
    RoomWriter,
    UnknownRoom,
    load_events,
)
from homeserver.storage import events as event_store
from homeserver.storage import state
from homeserver.storage.pool import Database

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255
# Membership changes go through the membership endpoints so that their checks apply.
_MEMBERSHIP_ONLY = "m.room.member"


def _check_sizes(event_type: str, state_key: str | None, content: Mapping[str, Any]) -> None:
    if not event_type or len(event_type.encode()) > MAX_ID_BYTES:
        raise ServiceError(400, "M_INVALID_PARAM", "Event type must be 1 to 255 bytes")
    if state_key is not None and len(state_key.encode()) > MAX_ID_BYTES:
        raise ServiceError(400, "M_INVALID_PARAM", "State key must be at most 255 bytes")
    if len(orjson.dumps(content)) > MAX_PDU_BYTES:
        raise ServiceError(413, "M_TOO_LARGE", "Event content is too large")


class SendService:
    def __init__(self, db: Database, events: EventCreator) -> None:
        self.db = db
        self.events = events

    async def _existing_txn(self, requester: Requester, txn_id: str) -> str | None:
        async with self.db.pool.connection() as conn:
            return await event_store.get_txn_event(
                conn, requester.user_id, requester.device_id, txn_id
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
    ) -> tuple[str, PersistedEvent | None]:
        """The event id, and the new event unless the txn id was already used."""
        _check_sizes(event_type, state_key, content)
        if txn_id is not None:
            existing = await self._existing_txn(requester, txn_id)
            if existing is not None:
                return existing, None
        try:
            async with self.events.writer(room_id) as writer:
                if event_type == "m.room.redaction" and state_key is None:
                    target = content.get("redacts")
                    if not isinstance(target, str):
                        raise ServiceError(400, "M_BAD_JSON", "Redactions need 'redacts'")
                    persisted = await self._redact(writer, requester, target, content)
                else:
                    if state_key is not None and event_type == _MEMBERSHIP_ONLY:
                        self._check_member_event(requester, state_key, content)
                    if state_key == "" and event_type == CANONICAL_ALIAS:
                        await check_canonical_alias(writer.conn, writer.cache, room_id, content)
                    persisted = await writer.append(
                        event_type, requester.user_id, content, state_key=state_key
                    )
                if txn_id is not None:
                    await event_store.insert_txn_event(
                        writer.conn,
                        requester.user_id,
                        requester.device_id,
                        txn_id,
                        persisted.event.event_id,
                    )
        except UnknownRoom:
            raise not_found(f"Unknown room {room_id}") from None
        except EventNotAllowed as exc:
            raise forbidden(str(exc)) from None
        except pg_errors.UniqueViolation:
            # The same txn id raced with itself: the first one won.
            existing = await self._existing_txn(requester, txn_id or "")
            if existing is None:
                raise
            return existing, None
        return persisted.event.event_id, persisted

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
        return await self.send(requester, room_id, "m.room.redaction", content, txn_id=txn_id)

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
