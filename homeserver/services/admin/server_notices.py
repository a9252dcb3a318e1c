"""Server notices: messages from the server to a user, in a private room of their own
that the notices account (Synapse's `server_notices` block names it, and gives it a
name and picture) creates on first use, invites them to, and tags `m.server_notice`
for them (the spec's tag, which clients show apart)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.services.accounts.account_data import AccountDataService
from homeserver.services.accounts.accounts import AccountService
from homeserver.services.admin.room_tools import acting_as
from homeserver.services.admin.users import AdminUserService, local_user_id
from homeserver.services.core.errors import ServiceError, invalid_param
from homeserver.services.rooms.creation import CreateRoomRequest, RoomCreator
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.send import SendService
from homeserver.storage.accounts import accounts as account_store
from homeserver.storage.admin import server_notices as store
from homeserver.storage.core.pool import Database

TAG = "m.server_notice"


class ServerNotices:
    def __init__(
        self,
        db: Database,
        server_name: str,
        settings: Mapping[str, Any],
        accounts: AccountService,
        admin_users: AdminUserService,
        creation: RoomCreator,
        membership: MembershipService,
        send: SendService,
        account_data: AccountDataService,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.settings = settings
        self.sender = f"@{settings['system_mxid_localpart']}:{server_name}"
        self.accounts = accounts
        self.admin_users = admin_users
        self.creation = creation
        self.membership = membership
        self.send = send
        self.account_data = account_data

    async def _ensure_sender(self) -> None:
        async with self.db.pool.connection() as conn:
            exists = await account_store.user_exists(conn, self.sender)
        if exists:
            return
        await self.accounts.register_user(self.sender, None)
        await self.admin_users.set_profile(
            self.sender,
            self.settings.get("system_mxid_display_name") or None,
            self.settings.get("system_mxid_avatar_url") or None,
        )

    async def _room_for(self, user_id: str) -> str:
        async with self.db.pool.connection() as conn:
            room_id = await store.room_of(conn, user_id)
        if room_id is not None:
            if await self.membership.current(room_id, self.sender) == "join":
                if await self.membership.current(room_id, user_id) not in ("join", "invite"):
                    await self.membership.invite(room_id, self.sender, user_id)
                return room_id
        room_id, _ = await self.creation.create(
            self.sender,
            CreateRoomRequest(
                name=self.settings.get("room_name"),
                topic=self.settings.get("room_topic"),
                preset="private_chat",
                invite=(user_id,),
                # Only the server speaks here.
                power_level_content_override={"events_default": 100},
            ),
        )
        async with self.db.pool.connection() as conn:
            await store.set_room(conn, user_id, room_id)
        await self.account_data.set_tag(acting_as(user_id), user_id, room_id, TAG, {})
        if self.settings.get("auto_join"):
            await self.membership.join(room_id, user_id)
        return room_id

    async def send_notice(self, body: dict[str, Any], txn_id: str | None) -> str:
        user_id = body.get("user_id")
        content = body.get("content")
        event_type = body.get("type", "m.room.message")
        state_key = body.get("state_key")
        if not isinstance(user_id, str):
            raise ServiceError(400, "M_MISSING_PARAM", "user_id must be a string")
        if not isinstance(content, dict):
            raise ServiceError(400, "M_MISSING_PARAM", "content must be an object")
        if not isinstance(event_type, str) or (
            state_key is not None and not isinstance(state_key, str)
        ):
            raise invalid_param("type and state_key must be strings")
        local_user_id(user_id, self.server_name)
        await self.admin_users.get_user(user_id)  # 404 for an unknown user
        await self._ensure_sender()
        room_id = await self._room_for(user_id)
        event_id, _ = await self.send.send(
            acting_as(self.sender),
            room_id,
            event_type,
            content,
            txn_id=txn_id,
            state_key=state_key,
        )
        return event_id
