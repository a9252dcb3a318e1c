"""EDUs (ephemeral data units) between servers: typing, receipts, presence, to-device
messages, device-list and cross-signing key updates.

In: `handle_edu` is called for every EDU of an inbound transaction. An EDU is about a
user, and only that user's server may speak for them: anything else (a forged or
malformed EDU, or typing and receipts from a server the room's ACL denies) is dropped
silently, as the sender cannot act on an error. What passes is applied to the local
service that owns it, which wakes the local syncs.

Out: `EduAnnouncer` is told by the local services of our users' changes and queues the
EDUs for the servers that must know (those with users in the room, or sharing a room
with the user) through the federation sender.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from federation.identifiers import server_name_of
from homeserver.services.core.errors import ServiceError
from homeserver.services.ephemeral.presence import STATES
from homeserver.services.ephemeral.receipts import READ
from homeserver.services.ephemeral.typing import DEFAULT_TIMEOUT_MS
from homeserver.services.remote.device_lists import (
    DEVICE_LIST_UPDATE,
    SIGNING_KEY_UPDATE,
    valid_id,
)
from homeserver.storage.core.pool import DataError
from homeserver.storage.ephemeral import presence as presence_store
from homeserver.storage.ephemeral.receipts import UNTHREADED, ReceiptRow
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import memberships

if TYPE_CHECKING:
    from homeserver.services.homeserver import Homeserver

log = logging.getLogger(__name__)

TYPING = "m.typing"
RECEIPT = "m.receipt"
PRESENCE = "m.presence"
DIRECT_TO_DEVICE = "m.direct_to_device"
# A remote user's typing lasts this long unless their server renews or stops it.
REMOTE_TYPING_TIMEOUT_MS = DEFAULT_TIMEOUT_MS
MAX_STATUS_MSG_LENGTH = 1024


async def handle_edu(hs: Homeserver, origin: str, edu_type: str, content: Any) -> None:
    """Apply one EDU from `origin`'s transaction. Never raises for bad input: an EDU the
    origin had no right to send, or that is malformed, is dropped silently."""
    handler = _HANDLERS.get(edu_type)
    if handler is None:
        log.debug("ignoring EDU %s from %s", edu_type, origin)
        return
    try:
        await handler(hs, origin, content)
    except (ServiceError, DataError) as exc:
        log.info("dropping EDU %s from %s: %s", edu_type, origin, exc)


def _from(origin: str, user_id: object) -> bool:
    """Whether `user_id` is a (storable) user ID of the origin server."""
    return valid_id(user_id) and server_name_of(user_id, "@") == origin


async def _joined(hs: Homeserver, room_id: str, user_id: str) -> bool:
    async with hs.db.pool.connection() as conn:
        row = await memberships.get_membership(conn, room_id, user_id)
    return row is not None and row.membership == "join"


async def _on_typing(hs: Homeserver, origin: str, content: Any) -> None:
    if not isinstance(content, dict):
        return
    room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
    if not _from(origin, user_id) or not valid_id(room_id) or not isinstance(typing, bool):
        return
    assert isinstance(user_id, str) and isinstance(room_id, str)
    if not await hs.server_acl.allows(origin, room_id):
        return
    if await _joined(hs, room_id, user_id):
        await hs.typing.set_typing(room_id, user_id, typing, REMOTE_TYPING_TIMEOUT_MS)


async def _on_receipt(hs: Homeserver, origin: str, content: Any) -> None:
    """{room: {"m.read": {user: {"event_ids": [...], "data": {"ts": ..}}}}}; receipt types
    other than m.read (private ones never travel) are ignored."""
    if not isinstance(content, dict):
        return
    for room_id, by_type in content.items():
        by_user = by_type.get(READ) if isinstance(by_type, dict) else None
        if not valid_id(room_id) or not isinstance(by_user, dict):
            continue
        if not await hs.server_acl.allows(origin, room_id):
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
            if not await _joined(hs, room_id, user_id):
                continue
            await hs.receipts.apply_remote(room_id, user_id, event_ids[-1], thread_id, ts)


async def _on_presence(hs: Homeserver, origin: str, content: Any) -> None:
    push = content.get("push") if isinstance(content, dict) else None
    if not hs.presence.enabled or not isinstance(push, list):
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
        if not isinstance(status, str) or len(status) > MAX_STATUS_MSG_LENGTH or "\x00" in status:
            status = None
        user_id = item["user_id"]
        async with hs.db.pool.connection() as conn:
            if not await room_servers.tracked_by_us(conn, [user_id], hs.server_name):
                continue
        await hs.presence.apply_remote(user_id, state, status, ago)


async def _on_direct_to_device(hs: Homeserver, origin: str, content: Any) -> None:
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
    await hs.to_device.deliver_remote(sender, event_type, message_id, messages)


async def _on_device_list_update(hs: Homeserver, origin: str, content: Any) -> None:
    await hs.federated_device_lists.on_device_list_update(origin, content)


async def _on_signing_key_update(hs: Homeserver, origin: str, content: Any) -> None:
    await hs.federated_device_lists.on_signing_key_update(origin, content)


_HANDLERS: dict[str, Callable[[Homeserver, str, Any], Awaitable[None]]] = {
    TYPING: _on_typing,
    RECEIPT: _on_receipt,
    PRESENCE: _on_presence,
    DIRECT_TO_DEVICE: _on_direct_to_device,
    DEVICE_LIST_UPDATE: _on_device_list_update,
    SIGNING_KEY_UPDATE: _on_signing_key_update,
}


class EduAnnouncer:
    """`hs.edu_announcer`: our users' typing, receipts, presence and to-device messages
    for other servers. Only changes of local users go out, so that what other servers
    told us is never echoed back."""

    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    def _local(self, user_id: str) -> bool:
        return server_name_of(user_id, "@") == self.hs.server_name

    async def _to_room(self, room_id: str, edu_type: str, content: dict[str, Any]) -> None:
        async with self.hs.db.pool.connection() as conn:
            servers = await room_servers.servers_in_room(conn, room_id)
        for server in servers:
            await self.hs.federation_sender.send_edu(server, edu_type, content)

    async def typing(self, room_id: str, user_id: str, typing: bool) -> None:
        if self._local(user_id):
            await self._to_room(
                room_id, TYPING, {"room_id": room_id, "user_id": user_id, "typing": typing}
            )

    async def receipt(self, row: ReceiptRow) -> None:
        if row.receipt_type != READ or not self._local(row.user_id):
            return
        data: dict[str, Any] = {"ts": row.ts}
        if row.thread_id != UNTHREADED:
            data["thread_id"] = row.thread_id
        content = {row.room_id: {READ: {row.user_id: {"event_ids": [row.event_id], "data": data}}}}
        await self._to_room(row.room_id, RECEIPT, content)

    async def presence(self, user_ids: list[str]) -> None:
        """One m.presence per destination, carrying every change it must hear of."""
        pushes: dict[str, list[dict[str, Any]]] = {}
        now = self.hs.presence.clock()
        async with self.hs.db.pool.connection() as conn:
            for user_id in user_ids:
                if not self._local(user_id):
                    continue
                row = await presence_store.get_presence(conn, user_id)
                if row is None:
                    continue
                item = {"user_id": user_id, **self.hs.presence.content(row, now)}
                for server in await room_servers.servers_sharing_room(conn, user_id):
                    pushes.setdefault(server, []).append(item)
        for server, push in pushes.items():
            await self.hs.federation_sender.send_edu(server, PRESENCE, {"push": push})

    async def to_device(
        self, sender: str, event_type: str, destination: str, messages: dict[str, Any]
    ) -> None:
        await self.hs.federation_sender.send_edu(
            destination,
            DIRECT_TO_DEVICE,
            {
                "sender": sender,
                "type": event_type,
                "message_id": secrets.token_urlsafe(16),
                "messages": messages,
            },
        )
