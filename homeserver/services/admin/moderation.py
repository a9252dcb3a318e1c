"""Moderating accounts: shadow bans, suspension, locks, rate-limit overrides, the admin
flag, logging in as a user, and the whole-account reads admin tools show (memberships,
account data, pushers).

A flag takes effect at once in this process (the user's cached tokens are dropped:
requesters carry the flags) and within the token cache's lifetime in the others.
"""

from __future__ import annotations

from typing import Any

from homeserver.services.accounts.auth import Requester, TokenCache, hash_token, new_token
from homeserver.services.accounts.devices import new_device_id
from homeserver.services.admin.users import local_user_id
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import invalid_param, not_found
from homeserver.storage.accounts import tokens
from homeserver.storage.admin import moderation
from homeserver.storage.admin import users as admin_users
from homeserver.storage.admin.moderation import Flag
from homeserver.storage.core.pool import Database
from homeserver.storage.push import pushers


def _pusher(row: pushers.PusherRow) -> dict[str, Any]:
    return {
        "app_display_name": row.app_display_name,
        "app_id": row.app_id,
        "data": row.data,
        "device_display_name": row.device_display_name,
        "kind": row.kind,
        "lang": row.lang,
        "profile_tag": row.profile_tag or "",
        "pushkey": row.pushkey,
    }


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_param(f"{key} must be a non-negative integer")
    return value


class AdminModerationService:
    """What admins do to an account's standing, and what they read of it."""

    def __init__(self, db: Database, server_name: str, token_cache: TokenCache) -> None:
        self.db = db
        self.server_name = server_name
        self.token_cache = token_cache

    async def _existing(self, user_id: str) -> str:
        local_user_id(user_id, self.server_name)
        async with self.db.pool.connection() as conn:
            if await admin_users.get_user(conn, user_id) is None:
                raise not_found("User not found")
        return user_id

    async def set_flag(self, user_id: str, flag: Flag, value: bool) -> None:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            await moderation.set_flag(conn, user_id, flag, value)
        self.token_cache.forget(user_id)

    async def get_flag(self, user_id: str, flag: Flag) -> bool:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            return bool(await moderation.get_flag(conn, user_id, flag))

    async def set_admin(self, requester: Requester, user_id: str, admin: bool) -> None:
        await self._existing(user_id)
        if not admin and user_id == requester.user_id:
            raise invalid_param("You may not demote yourself")
        async with self.db.pool.connection() as conn:
            await admin_users.set_admin(conn, user_id, admin)
        self.token_cache.forget(user_id)

    async def get_override(self, user_id: str) -> dict[str, Any]:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            found = await moderation.get_override(conn, user_id)
        if found is None:
            return {}
        return {"messages_per_second": int(found[0]), "burst_count": found[1]}

    async def set_override(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._existing(user_id)
        per_second = _count(body, "messages_per_second")
        burst = _count(body, "burst_count")
        async with self.db.pool.connection() as conn:
            await moderation.set_override(conn, user_id, per_second, burst)
        self.token_cache.forget(user_id)
        return {"messages_per_second": per_second, "burst_count": burst}

    async def delete_override(self, user_id: str) -> None:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            await moderation.delete_override(conn, user_id)
        self.token_cache.forget(user_id)

    async def login_as(
        self, requester: Requester, user_id: str, valid_until_ms: int | None
    ) -> dict[str, Any]:
        """A token for `user_id` on a device of its own that the user's device list does
        not show (as in Synapse); it ends at `valid_until_ms`, or at /logout."""
        await self._existing(user_id)
        if user_id == requester.user_id:
            raise invalid_param("Cannot use admin API to login as self")
        token = new_token("syt")
        async with self.db.pool.connection() as conn:
            await tokens.insert_access_token(
                conn,
                hash_token(token),
                user_id,
                new_device_id(),
                now_ms=now_ms(),
                expires_ts=valid_until_ms,
            )
        return {"access_token": token}

    async def memberships(self, user_id: str) -> dict[str, Any]:
        """Remote users too: whatever this server knows of them."""
        if not user_id.startswith("@"):
            raise invalid_param(f"{user_id!r} is not a user id")
        async with self.db.pool.connection() as conn:
            found = await moderation.memberships_of_user(conn, user_id)
        return {"memberships": found, "total": len(found)}

    async def account_data(self, user_id: str) -> dict[str, Any]:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            rows = await moderation.all_account_data(conn, user_id)
        out: dict[str, Any] = {"global": {}, "rooms": {}}
        for room_id, kind, content in rows:
            if room_id:
                out["rooms"].setdefault(room_id, {})[kind] = content
            else:
                out["global"][kind] = content
        return {"account_data": out}

    async def pushers(self, user_id: str) -> dict[str, Any]:
        await self._existing(user_id)
        async with self.db.pool.connection() as conn:
            rows = await pushers.pushers_of_user(conn, user_id)
        return {"pushers": [_pusher(row) for row in rows], "total": len(rows)}
