"""EDUs (ephemeral data units) between servers: typing, receipts, presence, to-device
messages, device-list and cross-signing key updates.

In: `InboundEdus.handle` is called for every EDU of an inbound transaction. An EDU is
about a user, and only that user's server may speak for them: anything else (a forged
or malformed EDU, or typing and receipts from a server the room's ACL denies) is
dropped silently, as the sender cannot act on an error. What passes is applied to the
local service that owns it, which wakes the local syncs.

Out: services/remote/edu_announcer.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from federation.identifiers import server_name_of
from homeserver.services.core.errors import ServiceError
from homeserver.services.ephemeral.presence import STATES, PresenceService
from homeserver.services.ephemeral.receipts import READ, ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import DEFAULT_TIMEOUT_MS, TypingService
from homeserver.services.remote.device_lists import (
    DEVICE_LIST_UPDATE,
    SIGNING_KEY_UPDATE,
    RemoteDeviceLists,
    valid_id,
)
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.storage.core.pool import Database, DataError
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import memberships

log = logging.getLogger(__name__)

TYPING = "m.typing"
RECEIPT = "m.receipt"
PRESENCE = "m.presence"
DIRECT_TO_DEVICE = "m.direct_to_device"
# A remote user's typing lasts this long unless their server renews or stops it.
REMOTE_TYPING_TIMEOUT_MS = DEFAULT_TIMEOUT_MS
MAX_STATUS_MSG_LENGTH = 1024


def _from(origin: str, user_id: object) -> bool:
    """Whether `user_id` is a (storable) user ID of the origin server."""
    return valid_id(user_id) and server_name_of(user_id, "@") == origin


class InboundEdus:
    """The EDUs of other servers' transactions, applied to the local services."""

    def __init__(
        self,
        db: Database,
        server_acl: ServerAclService,
        typing: TypingService,
        receipts: ReceiptService,
        presence: PresenceService,
        to_device: ToDeviceService,
        device_lists: RemoteDeviceLists,
        server_name: str,
    ) -> None:
        self.db = db
        self.server_acl = server_acl
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self.to_device = to_device
        self.device_lists = device_lists
        self.server_name = server_name
        self._handlers: dict[str, Callable[[str, Any], Awaitable[None]]] = {
            TYPING: self._on_typing,
            RECEIPT: self._on_receipt,
            PRESENCE: self._on_presence,
            DIRECT_TO_DEVICE: self._on_direct_to_device,
            DEVICE_LIST_UPDATE: device_lists.on_device_list_update,
            SIGNING_KEY_UPDATE: device_lists.on_signing_key_update,
        }

    async def handle(self, origin: str, edu_type: str, content: Any) -> None:
        """Apply one EDU from `origin`'s transaction. Never raises for bad input: an EDU
        the origin had no right to send, or that is malformed, is dropped silently."""
        handler = self._handlers.get(edu_type)
        if handler is None:
            log.debug("ignoring EDU %s from %s", edu_type, origin)
            return
        try:
            await handler(origin, content)
        except (ServiceError, DataError) as exc:
            log.info("dropping EDU %s from %s: %s", edu_type, origin, exc)

    async def _joined(self, room_id: str, user_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            row = await memberships.get_membership(conn, room_id, user_id)
        return row is not None and row.membership == "join"

    async def _on_typing(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        room_id, user_id = content.get("room_id"), content.get("user_id")
        typing = content.get("typing")
        if not _from(origin, user_id) or not valid_id(room_id) or not isinstance(typing, bool):
            return
        assert isinstance(user_id, str) and isinstance(room_id, str)
        if not await self.server_acl.allows(origin, room_id):
            return
        if await self._joined(room_id, user_id):
            await self.typing.set_typing(room_id, user_id, typing, REMOTE_TYPING_TIMEOUT_MS)

    async def _on_receipt(self, origin: str, content: Any) -> None:
        """{room: {"m.read": {user: {"event_ids": [...], "data": {"ts": ..}}}}}; receipt
        types other than m.read (private ones never travel) are ignored."""
        if not isinstance(content, dict):
            return
        for room_id, by_type in content.items():
            by_user = by_type.get(READ) if isinstance(by_type, dict) else None
            if not valid_id(room_id) or not isinstance(by_user, dict):
                continue
            if not await self.server_acl.allows(origin, room_id):
                continue
            for user_id, receipt in by_user.items():
                if not _from(origin, user_id) or not isinstance(receipt, dict):
                    continue
                event_ids = receipt.get("event_ids")
                data = receipt.get("data")
                data = data if isinstance(data, dict) else {}
                ts, thread_id = data.get("ts"), data.get("thread_id")
                if (
                    not isinstance(event_ids, list)
                    or not event_ids
                    or not all(valid_id(e) and e.startswith("$") for e in event_ids)
                    or (thread_id is not None and not valid_id(thread_id))
                ):
                    continue
                if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 2**63:
                    ts = None
                if not await self._joined(room_id, user_id):
                    continue
                await self.receipts.apply_remote(room_id, user_id, event_ids[-1], thread_id, ts)

    async def _on_presence(self, origin: str, content: Any) -> None:
        push = content.get("push") if isinstance(content, dict) else None
        if not self.presence.enabled or not isinstance(push, list):
            return
        for item in push:
            if not isinstance(item, dict) or not _from(origin, item.get("user_id")):
                continue
            state, ago = item.get("presence"), item.get("last_active_ago", 0)
            status = item.get("status_msg")
            if state not in STATES:
                continue
            if not isinstance(ago, int) or isinstance(ago, bool) or not 0 <= ago < 2**62:
                ago = 0
            if (
                not isinstance(status, str)
                or len(status) > MAX_STATUS_MSG_LENGTH
                or "\x00" in status
            ):
                status = None
            user_id = item["user_id"]
            async with self.db.pool.connection() as conn:
                if not await room_servers.tracked_by_us(conn, [user_id], self.server_name):
                    continue
            await self.presence.apply_remote(user_id, state, status, ago)

    async def _on_direct_to_device(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if (
            not _from(origin, sender)
            or not valid_id(event_type)
            or not valid_id(message_id)
            or not isinstance(messages, dict)
        ):
            return
        assert isinstance(sender, str) and isinstance(event_type, str)
        assert isinstance(message_id, str)
        await self.to_device.deliver_remote(sender, event_type, message_id, messages)
