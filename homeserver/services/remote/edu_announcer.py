"""EDUs for other servers: when a local service tells us of a change by one of our
users (typing, a public read receipt, presence) or has to-device messages for another
server, the EDU is queued through the federation sender for the servers that must know:
those with users in the room, or sharing a room with the user. (Inbound EDUs:
services/remote/edus.py.)"""

from __future__ import annotations

import secrets
from typing import Any

from federation.identifiers import server_name_of
from homeserver.services.ephemeral.presence import PresenceService
from homeserver.services.ephemeral.receipts import READ
from homeserver.services.remote.edus import DIRECT_TO_DEVICE, PRESENCE, RECEIPT, TYPING
from homeserver.services.remote.sender import FederationSender
from homeserver.storage.core.pool import Database
from homeserver.storage.ephemeral import presence as presence_store
from homeserver.storage.ephemeral.receipts import UNTHREADED, ReceiptRow
from homeserver.storage.remote import room_servers


class EduAnnouncer:
    """Our users' typing, receipts, presence and to-device messages for other servers.
    Only changes of local users go out, so that what other servers told us is never
    echoed back."""

    def __init__(
        self, db: Database, sender: FederationSender, presence: PresenceService, server_name: str
    ) -> None:
        self.db = db
        self.sender = sender
        self.presence = presence
        self.server_name = server_name

    def _local(self, user_id: str) -> bool:
        return server_name_of(user_id, "@") == self.server_name

    async def _to_room(self, room_id: str, edu_type: str, content: dict[str, Any]) -> None:
        async with self.db.pool.connection() as conn:
            servers = await room_servers.servers_in_room(conn, room_id)
        for server in servers:
            await self.sender.send_edu(server, edu_type, content)

    async def typing_changed(self, room_id: str, user_id: str, typing: bool) -> None:
        if self._local(user_id):
            await self._to_room(
                room_id, TYPING, {"room_id": room_id, "user_id": user_id, "typing": typing}
            )

    async def receipt_stored(self, row: ReceiptRow) -> None:
        if row.receipt_type != READ or not self._local(row.user_id):
            return
        data: dict[str, Any] = {"ts": row.ts}
        if row.thread_id != UNTHREADED:
            data["thread_id"] = row.thread_id
        content = {row.room_id: {READ: {row.user_id: {"event_ids": [row.event_id], "data": data}}}}
        await self._to_room(row.room_id, RECEIPT, content)

    async def presence_changed(self, user_ids: list[str]) -> None:
        """One m.presence per destination, carrying every change it must hear of."""
        pushes: dict[str, list[dict[str, Any]]] = {}
        now = self.presence.clock()
        async with self.db.pool.connection() as conn:
            for user_id in user_ids:
                if not self._local(user_id):
                    continue
                row = await presence_store.get_presence(conn, user_id)
                if row is None:
                    continue
                item = {"user_id": user_id, **self.presence.content(row, now)}
                for server in await room_servers.servers_sharing_room(conn, user_id):
                    pushes.setdefault(server, []).append(item)
        for server, push in pushes.items():
            await self.sender.send_edu(server, PRESENCE, {"push": push})

    async def to_device(
        self, sender: str, event_type: str, destination: str, messages: dict[str, Any]
    ) -> None:
        await self.sender.send_edu(
            destination,
            DIRECT_TO_DEVICE,
            {
                "sender": sender,
                "type": event_type,
                "message_id": secrets.token_urlsafe(16),
                "messages": messages,
            },
        )
