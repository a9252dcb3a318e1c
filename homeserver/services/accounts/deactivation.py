"""Deactivating an account, self-service or by an admin.

The account closes in one transaction (`close_account`): afterwards it cannot log in,
and nothing of it is half done. Leaving its rooms follows in the background, since
a user may be in hundreds: each room the user is joined to gets their leave, each
invite is rejected, each knock withdrawn. Those leaves keep no bookkeeping of their
own: a deactivated user who still holds such a membership is the work left over, so a
sweep (at start, then every few seconds) finishes what a restart or a dead process cut
short, and running it twice is harmless (a room already left is skipped). One process
at a time works on a user: the delivery engine's advisory lock per user
(services/core/delivery.py), which dies with its process. Leaving every room also takes
the user out of the user directory, which lists only active users and members of rooms.
"""

from __future__ import annotations

import asyncio
import logging

from homeserver.services.accounts.auth import TokenCache
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.rooms.membership import MembershipService
from homeserver.storage.accounts import accounts as account_store
from homeserver.storage.accounts import deactivation as store
from homeserver.storage.accounts import devices, profiles, tokens
from homeserver.storage.core.pool import Database, DatabaseError
from homeserver.storage.e2ee import keys as e2e_keys
from homeserver.storage.push import pushers
from homeserver.storage.rooms import delayed_events, memberships
from homeserver.storage.threepids import threepids

log = logging.getLogger(__name__)

_LEFT_MEMBERSHIPS = ("join", "invite", "knock")
SWEEP_INTERVAL_S = 10.0
# When to try again the rooms a pass could not leave.
RETRY_MS = 300_000


class Deactivations:
    def __init__(
        self,
        db: Database,
        device_lists: DeviceLists,
        membership: MembershipService,
        token_cache: TokenCache,
    ) -> None:
        self.db = db
        self.device_lists = device_lists
        self.membership = membership
        self.token_cache = token_cache
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=self._leave_all,
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda user_id: f"leaves of deactivated {user_id}",
            failure_retry_ms=RETRY_MS,
            pending=self._pending,
            sweep_interval_s=SWEEP_INTERVAL_S,
            name="deactivation leaves",
        )

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """Close the account now; its rooms are left once this has returned."""
        await self.close_account(user_id, erase=erase)
        self.token_cache.forget(user_id)
        self.leave_rooms_later(user_id)

    async def close_account(self, user_id: str, *, erase: bool) -> None:
        """Close the account for good, all at once: no password, no devices (nor their
        keys), no tokens, no pushers, no delayed events, no email addresses; with `erase`,
        no display name
        or avatar either."""
        async with self.device_lists.transaction([user_id]) as conn:
            await account_store.deactivate_user(conn, user_id, erase=erase)
            await pushers.delete_user_pushers(conn, user_id)
            await delayed_events.delete_of_user(conn, user_id)
            await threepids.delete_user_threepids(conn, user_id)
            if erase and await profiles.get_profile(conn, user_id) is not None:
                await profiles.set_profile_field(conn, user_id, "displayname", None)
                await profiles.set_profile_field(conn, user_id, "avatar_url", None)
            await tokens.delete_user_tokens(conn, user_id)
            device_ids = await devices.all_device_ids(conn, user_id)
            await devices.delete_devices(conn, user_id, device_ids)
            await e2e_keys.delete_device_keys(conn, user_id, device_ids)

    def leave_rooms_later(self, user_id: str) -> None:
        self._workers.wake(user_id)

    async def start(self) -> None:
        """Resume the leaves of accounts deactivated before a restart, or by a process
        that died, now and every few seconds."""
        try:
            await self._workers.sweep()
        except (DatabaseError, OSError) as exc:
            log.warning("could not look for rooms of deactivated accounts: %s", exc)
        self._workers.start()

    async def idle(self) -> None:
        """Wait until no leaves are under way in this process (for tests)."""
        await self._workers.idle()

    async def close(self) -> None:
        await self._workers.close()

    async def _pending(self) -> list[tuple[str, int | None]]:
        async with self.db.pool.connection() as conn:
            return [(user_id, None) for user_id in await memberships.deactivated_members(conn)]

    async def _still_deactivated(self, user_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            info = await account_store.get_login_info(conn, user_id)
        return info is not None and info[1]

    async def _rooms(self, user_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            rows = await memberships.rooms_of_user(conn, user_id, _LEFT_MEMBERSHIPS)
        return sorted(row.room_id for row in rows)

    async def _leave_all(self, user_id: str) -> int | None:
        """Leave rooms until none is left, or a whole pass gets nowhere (the rest failed:
        the time to try again at), or an admin reactivates the account."""
        failed: set[str] = set()
        while True:
            pending = [room for room in await self._rooms(user_id) if room not in failed]
            if not pending:
                break
            for room_id in pending:
                if not await self._still_deactivated(user_id):
                    return None
                try:
                    await self.membership.leave(room_id, user_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed.add(room_id)
                    log.warning("deactivated %s could not leave %s: %r", user_id, room_id, exc)
        if failed:
            log.warning("deactivated %s is still in %d rooms", user_id, len(failed))
            return now_ms() + RETRY_MS
        return None
