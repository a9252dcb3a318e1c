"""Devices: listing, renaming, deleting (with their tokens), and last-seen tracking."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from homeserver.services.accounts.accounts import storable
from homeserver.services.accounts.auth import Requester, TokenCache
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import not_found
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.storage.accounts import devices, tokens
from homeserver.storage.core.pool import Database
from homeserver.storage.e2ee import keys as e2e_keys
from homeserver.storage.push import pushers

MAX_DISPLAY_NAME_LENGTH = 512
SEEN_INTERVAL = 60.0  # seconds between last-seen writes for one token
_SEEN_MAX_ENTRIES = 100_000


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def render(row: devices.DeviceRow) -> dict[str, Any]:
    """The spec's Device; the optional fields are always present (null when unknown)
    because clients such as matrix-nio require them."""
    return {
        "device_id": row.device_id,
        "display_name": row.display_name,
        "last_seen_ts": row.last_seen_ts,
        "last_seen_ip": row.last_seen_ip,
    }


class SeenThrottle:
    """Remembers when each token's device was last recorded as seen, so that a busy
    client costs one UPDATE a minute instead of one per request."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def due(self, token_id: int) -> bool:
        now = time.monotonic()
        last = self._last.get(token_id)
        if last is not None and now - last < SEEN_INTERVAL:
            return False
        if len(self._last) >= _SEEN_MAX_ENTRIES:
            self._last.clear()
        self._last[token_id] = now
        return True


class DeviceService:
    """A user's devices; deleting one deletes its tokens, evicts them from the token
    cache and announces a device-list change."""

    def __init__(
        self,
        db: Database,
        device_lists: DeviceLists,
        token_cache: TokenCache,
        seen: SeenThrottle,
    ) -> None:
        self.db = db
        self.device_lists = device_lists
        self.token_cache = token_cache
        self.seen = seen

    async def list_devices(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            return [render(row) for row in await devices.list_devices(conn, user_id)]

    async def get_device(self, user_id: str, device_id: str) -> dict[str, Any]:
        storable(device_id, "device_id")
        async with self.db.pool.connection() as conn:
            row = await devices.get_device(conn, user_id, device_id)
        if row is None:
            raise not_found("No such device")
        return render(row)

    async def rename_device(self, user_id: str, device_id: str, display_name: str | None) -> None:
        storable(device_id, "device_id")
        if display_name is not None:
            storable(display_name, "display_name")
        async with self.db.pool.connection() as conn:
            if not await devices.set_display_name(conn, user_id, device_id, display_name):
                raise not_found("No such device")

    async def owned(self, user_id: str, device_ids: list[str]) -> list[str]:
        """Those of `device_ids` that are the user's own devices, in the given order.
        Another user's device id is indistinguishable from an unknown one."""
        for device_id in device_ids:
            storable(device_id, "device_id")
        async with self.db.pool.connection() as conn:
            mine = set(await devices.all_device_ids(conn, user_id))
        return [device_id for device_id in dict.fromkeys(device_ids) if device_id in mine]

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices, every token issued to them, the pushers set through those
        tokens and their keys (a device-list change for everyone sharing a room with the
        user); unknown ids are ignored."""
        if not device_ids:
            return
        for device_id in device_ids:
            storable(device_id, "device_id")
        async with self.device_lists.transaction([user_id]) as conn:
            revoked = await tokens.delete_device_tokens(conn, user_id, device_ids)
            await pushers.delete_token_pushers(conn, user_id, revoked)
            await devices.delete_devices(conn, user_id, device_ids)
            await e2e_keys.delete_device_keys(conn, user_id, device_ids)
        self.token_cache.forget(user_id, device_ids)

    async def delete_all_devices(self, user_id: str) -> None:
        async with self.device_lists.transaction([user_id]) as conn:
            await tokens.delete_user_tokens(conn, user_id)
            device_ids = await devices.all_device_ids(conn, user_id)
            await devices.delete_devices(conn, user_id, device_ids)
            await e2e_keys.delete_device_keys(conn, user_id, device_ids)
        self.token_cache.forget(user_id)

    async def delete_other_sessions(self, requester: Requester) -> None:
        """Log out everywhere except the requesting session: the other tokens go, and
        the pushers set through them, which would otherwise keep notifying."""
        user_id = requester.user_id
        async with self.device_lists.transaction([user_id]) as conn:
            others = await devices.other_device_ids(conn, user_id, requester.device_id)
            revoked = await tokens.delete_device_tokens(conn, user_id, others)
            await devices.delete_devices(conn, user_id, others)
            await e2e_keys.delete_device_keys(conn, user_id, others)
            revoked += await tokens.delete_other_access_tokens(
                conn, user_id, requester.device_id, requester.token_id
            )
            await pushers.delete_token_pushers(conn, user_id, revoked)
        self.token_cache.forget(user_id)

    async def record_seen(
        self, requester: Requester, ip: str | None, user_agent: str | None
    ) -> None:
        """Note the device's last use, at most once a minute per token."""
        if not self.seen.due(requester.token_id):
            return
        async with self.db.pool.connection() as conn:
            await devices.record_seen(
                conn, requester.user_id, requester.device_id, now_ms(), ip, user_agent
            )
