"""Send-to-device messaging: messages queued per device, delivered through sync.

A message stays stored until its device acknowledges it, which it does by coming
back to sync with a token at or past the message's position: a response lost on
the way is answered again for the same token, and nothing is delivered twice once
the client moves on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from federation.identifiers import is_user_id, server_name_of
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.streams import StreamAllocator
from homeserver.storage.accounts import devices
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.ephemeral import to_device as store

ALL_DEVICES = "*"
MAX_NAME_BYTES = 255  # event types and transaction ids
MAX_CONTENT_BYTES = 65536  # one message's content, as federation would carry it
MAX_MESSAGES = 10_000  # device messages per request, after expanding "*"


class RemoteToDevice(Protocol):
    """Where messages for other servers' users go (services/remote/edu_announcer.py)."""

    async def to_device(
        self, sender: str, event_type: str, destination: str, messages: dict[str, Any]
    ) -> None:
        """Send `messages` ({user: {device or "*": content}}) to `destination`."""


class _TxnTaken(Exception):
    """The transaction id was claimed by a concurrent request: roll back."""


class ToDeviceService:
    """`hs.to_device`."""

    def __init__(
        self,
        db: Database,
        allocator: StreamAllocator,
        notifier: Notifier,
        remote: RemoteToDevice,
        server_name: str,
    ) -> None:
        self.db = db
        self.allocator = allocator
        self.notifier = notifier
        self.remote = remote
        self.server_name = server_name

    async def send(
        self, requester: Requester, event_type: str, txn_id: str, body: Mapping[str, Any]
    ) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}, idempotent per (sender, device, txn)."""
        for value, what in ((event_type, "Event type"), (txn_id, "Transaction ID")):
            if not value or len(value.encode()) > MAX_NAME_BYTES:
                raise ServiceError(400, "M_INVALID_PARAM", f"{what} must be 1 to 255 bytes")
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise bad_json("'messages' must be an object")
        local, remote = self._split(messages)
        sender, device = requester.user_id, requester.device_id
        async with self.db.pool.connection() as conn:
            if await store.txn_seen(conn, sender, device, txn_id):
                return

        async def claim(conn: Connection) -> bool:
            return await store.claim_txn(conn, sender, device, txn_id, now_ms())

        if not await self._deliver(sender, event_type, local, claim):
            return  # a concurrent request with this transaction id handled it
        for destination, by_user in remote.items():
            await self.remote.to_device(sender, event_type, destination, by_user)

    async def deliver_remote(
        self, sender: str, event_type: str, message_id: str, messages: Mapping[str, Any]
    ) -> None:
        """An m.direct_to_device EDU (already checked to come from the sender's server):
        deliver what is for our users' devices, once per message id."""
        local: dict[str, dict[str, str]] = {}
        for user_id, by_device in messages.items():
            if server_name_of(user_id, "@") != self.server_name or not isinstance(by_device, dict):
                continue
            for device_id, content in by_device.items():
                if isinstance(device_id, str) and isinstance(content, dict):
                    encoded = orjson.dumps(content)
                    if len(encoded) <= MAX_CONTENT_BYTES:
                        local.setdefault(user_id, {})[device_id] = encoded.decode()

        async def claim(conn: Connection) -> bool:
            return await store.claim_inbound_message_id(conn, sender, message_id, now_ms())

        await self._deliver(sender, event_type, local, claim, cap=True)

    async def _deliver(
        self,
        sender: str,
        event_type: str,
        local: dict[str, dict[str, str]],
        claim: Callable[[Connection], Awaitable[bool]],
        *,
        cap: bool = False,
    ) -> bool:
        """Queue messages ({user: {device or "*": content JSON}}) for existing local
        devices in one transaction with `claim`, which returns False when this request
        was handled before (then nothing is queued, and the answer is False). Too many
        messages is a 413, or with `cap` (federation, where nobody could act on an
        error) the excess is dropped."""
        async with self.db.pool.connection() as conn:
            rows: list[tuple[str, str, str]] = []  # (user, device, content JSON)
            for user_id, by_device in local.items():
                known = await devices.all_device_ids(conn, user_id)
                for device_id, content in by_device.items():
                    targets = known if device_id == ALL_DEVICES else [device_id]
                    rows.extend((user_id, d, content) for d in targets if d in known)
        if len(rows) > MAX_MESSAGES:
            if not cap:
                raise ServiceError(413, "M_TOO_LARGE", f"More than {MAX_MESSAGES} device messages")
            rows = rows[:MAX_MESSAGES]
        positions = await self.allocator.allocate("to_device", len(rows)) if rows else []
        try:
            async with self.db.pool.connection() as conn, conn.transaction():
                if not await claim(conn):
                    raise _TxnTaken
                await store.insert_messages(
                    conn,
                    [
                        store.ToDeviceRow(user_id, device_id, position, sender, event_type, content)
                        for (user_id, device_id, content), position in zip(
                            rows, positions, strict=True
                        )
                    ],
                )
                await streams.finish(conn, "to_device", positions)
        except _TxnTaken:
            await self.allocator.abandon("to_device", positions)
            return False
        except BaseException:
            await self.allocator.abandon("to_device", positions)
            raise
        if positions:
            await self.notifier.notify(
                "to_device", positions[-1], users=sorted({user_id for user_id, _, _ in rows})
            )
        return True

    def _split(
        self, messages: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, dict[str, Any]]]]:
        """Check the request; local messages as {user: {device: content JSON}}, remote
        ones grouped by destination server."""
        local: dict[str, dict[str, str]] = {}
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            server = server_name_of(user_id, "@")
            if not is_user_id(user_id) or server is None:
                raise ServiceError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user ID")
            if not isinstance(by_device, dict):
                raise bad_json(f"Messages for {user_id} must be an object of devices")
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise bad_json(f"The message for {user_id} {device_id} must be an object")
                encoded = orjson.dumps(content)
                if len(encoded) > MAX_CONTENT_BYTES:
                    raise ServiceError(413, "M_TOO_LARGE", "A to-device message is too large")
                if server == self.server_name:
                    local.setdefault(user_id, {})[device_id] = encoded.decode()
                else:
                    remote.setdefault(server, {}).setdefault(user_id, {})[device_id] = content
        return local, remote

    async def messages_for(
        self, user_id: str, device_id: str, since_pos: int, upto_pos: int, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages for a device at positions in (since_pos, upto_pos], oldest first, and
        the position the device then has everything up to: `upto_pos` when all fit in
        `limit`, else the last one returned (the next sync continues from there)."""
        async with self.db.pool.connection() as conn:
            rows = await store.messages_for(conn, user_id, device_id, since_pos, upto_pos, limit)
        events = [
            {"sender": r.sender, "type": r.type, "content": orjson.loads(r.content)} for r in rows
        ]
        if len(rows) < limit:
            return events, upto_pos
        return events, rows[-1].stream_id

    async def ack(self, user_id: str, device_id: str, upto_pos: int) -> None:
        """The device has received everything up to `upto_pos`: forget it."""
        async with self.db.pool.connection() as conn:
            await store.delete_up_to(conn, user_id, device_id, upto_pos)
