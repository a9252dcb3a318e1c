"""Devices: listing, renaming, deleting (with their tokens), and last-seen tracking."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from homeserver.services.accounts.accounts import storable
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import not_found
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.storage.accounts import devices, tokens
from homeserver.storage.core.pool import Database
from homeserver.storage.e2ee import keys as e2e_keys

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


async def list_devices(db: Database, user_id: str) -> list[dict[str, Any]]:
    async with db.pool.connection() as conn:
        return [render(row) for row in await devices.list_devices(conn, user_id)]


async def get_device(db: Database, user_id: str, device_id: str) -> dict[str, Any]:
    storable(device_id, "device_id")
    async with db.pool.connection() as conn:
        row = await devices.get_device(conn, user_id, device_id)
    if row is None:
        raise not_found("No such device")
    return render(row)


async def rename_device(
    db: Database, user_id: str, device_id: str, display_name: str | None
) -> None:
    storable(device_id, "device_id")
    if display_name is not None:
        storable(display_name, "display_name")
    async with db.pool.connection() as conn:
        if not await devices.set_display_name(conn, user_id, device_id, display_name):
            raise not_found("No such device")


async def delete_devices(device_lists: DeviceLists, user_id: str, device_ids: list[str]) -> None:
    """Delete devices, every token issued to them and their keys (a device-list change
    for everyone sharing a room with the user); unknown ids are ignored."""
    if not device_ids:
        return
    for device_id in device_ids:
        storable(device_id, "device_id")
    async with device_lists.transaction([user_id]) as conn:
        await tokens.delete_device_tokens(conn, user_id, device_ids)
        await devices.delete_devices(conn, user_id, device_ids)
        await e2e_keys.delete_device_keys(conn, user_id, device_ids)


async def delete_all_devices(device_lists: DeviceLists, user_id: str) -> None:
    async with device_lists.transaction([user_id]) as conn:
        await tokens.delete_user_tokens(conn, user_id)
        device_ids = await devices.all_device_ids(conn, user_id)
        await devices.delete_devices(conn, user_id, device_ids)
        await e2e_keys.delete_device_keys(conn, user_id, device_ids)


async def delete_other_sessions(device_lists: DeviceLists, requester: Requester) -> None:
    """Log out everywhere except the requesting session."""
    async with device_lists.transaction([requester.user_id]) as conn:
        others = await devices.other_device_ids(conn, requester.user_id, requester.device_id)
        await tokens.delete_device_tokens(conn, requester.user_id, others)
        await devices.delete_devices(conn, requester.user_id, others)
        await e2e_keys.delete_device_keys(conn, requester.user_id, others)
        await tokens.delete_other_access_tokens(
            conn, requester.user_id, requester.device_id, requester.token_id
        )


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


async def record_seen(
    db: Database,
    throttle: SeenThrottle,
    requester: Requester,
    ip: str | None,
    user_agent: str | None,
) -> None:
    if not throttle.due(requester.token_id):
        return
    async with db.pool.connection() as conn:
        await devices.record_seen(
            conn, requester.user_id, requester.device_id, now_ms(), ip, user_agent
        )
