"""Deactivating an account, self-service or by an admin.

The account closes in one transaction (`close_account`): afterwards it cannot log in,
and nothing of it is half done. Leaving its rooms follows in the background, since
a user may be in hundreds: each room the user is joined to gets their leave, each
invite is rejected, each knock withdrawn. Those leaves keep no bookkeeping of their
own: a deactivated user who still holds such a membership is the work left over, so a
sweep at startup finishes what a restart cut short, and running it twice is harmless
(a room already left is skipped). Leaving every room also takes the user out of the
user directory, which lists only active users and members of rooms.
"""

from __future__ import annotations

import asyncio
import logging

from homeserver.services.accounts.auth import TokenCache
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.rooms.membership import MembershipService
from homeserver.storage.accounts import accounts as account_store
from homeserver.storage.accounts import devices, profiles, tokens
from homeserver.storage.core.pool import Database
from homeserver.storage.e2ee import keys as e2e_keys
from homeserver.storage.push import pushers
from homeserver.storage.rooms import delayed_events, memberships
from homeserver.storage.threepids import threepids

log = logging.getLogger(__name__)

_LEFT_MEMBERSHIPS = ("join", "invite", "knock")


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
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
        if user_id in self._running:
            return  # the running task looks for rooms again before it ends
        task = asyncio.create_task(self._leave_all(user_id))
        self._running[user_id] = task
        self._track(task)
        task.add_done_callback(lambda _: self._running.pop(user_id, None))

    async def start(self) -> None:
        """Resume the leaves of accounts deactivated before a restart."""
        self._track(asyncio.create_task(self._sweep()))

    async def idle(self) -> None:
        """Wait until no leaves are under way in this process (for tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        try:
            async with self.db.pool.connection() as conn:
                user_ids = await memberships.deactivated_members(conn)
        except Exception:
            log.exception("could not look for rooms of deactivated accounts")
            return
        for user_id in user_ids:
            self.leave_rooms_later(user_id)

    async def _still_deactivated(self, user_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            info = await account_store.get_login_info(conn, user_id)
        return info is not None and info[1]

    async def _rooms(self, user_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            rows = await memberships.rooms_of_user(conn, user_id, _LEFT_MEMBERSHIPS)
        return sorted(row.room_id for row in rows)

    async def _leave_all(self, user_id: str) -> None:
        """Leave rooms until none is left, or a whole pass gets nowhere (the rest failed,
        and wait for the next sweep), or an admin reactivates the account."""
        failed: set[str] = set()
        while True:
            pending = [room for room in await self._rooms(user_id) if room not in failed]
            if not pending:
                break
            for room_id in pending:
                if not await self._still_deactivated(user_id):
                    return
                try:
                    await self.membership.leave(room_id, user_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed.add(room_id)
                    log.warning("deactivated %s could not leave %s: %r", user_id, room_id, exc)
        if failed:
            log.warning("deactivated %s is still in %d rooms", user_id, len(failed))
