"""Media retention (Synapse's `media_retention`): local media and cached remote media
not served for longer than their lifetime are deleted, files and thumbnails included.

As in Synapse, protected and quarantined media and local users' avatars are never
deleted by retention. Serving media records its last access (at most once an hour per
item); a job every hour, run by one process of a cluster at a time (an advisory lock;
the others skip that run), deletes what expired in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from homeserver.services.core.clock import now_ms
from homeserver.storage.admin import media as admin_store
from homeserver.storage.core.pool import Database, DatabaseError
from homeserver.storage.media import retention as store
from homeserver.storage.media.files import MediaFiles
from homeserver.storage.media.media import MediaRow

RUN_INTERVAL_S = 3600.0
FIRST_RUN_DELAY_S = 60.0

log = logging.getLogger(__name__)


class MediaRetention:
    """Records media accesses and deletes media that expired."""

    def __init__(
        self,
        db: Database,
        files: MediaFiles,
        server_name: str,
        *,
        local_lifetime_ms: int | None,
        remote_lifetime_ms: int | None,
    ) -> None:
        self.db = db
        self.files = files
        self.server_name = server_name
        self.local_lifetime_ms = local_lifetime_ms
        self.remote_lifetime_ms = remote_lifetime_ms
        self._task: asyncio.Task[None] | None = None

    async def accessed(self, row: MediaRow) -> None:
        """Note that `row` was served, unless that was noted within the last hour."""
        now = now_ms()
        last = row.last_access_ts
        if last is not None and now - last < store.ACCESS_GRANULARITY_MS:
            return
        async with self.db.pool.connection() as conn:
            await store.touch(conn, row.origin, row.media_id, now)

    def start(self) -> None:
        if self.local_lifetime_ms is None and self.remote_lifetime_ms is None:
            return
        self._task = asyncio.create_task(self._run_forever(), name="media retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run_forever(self) -> None:
        await asyncio.sleep(FIRST_RUN_DELAY_S)
        while True:
            try:
                await self.apply(now_ms())
            except (DatabaseError, OSError):
                log.exception("applying media retention failed; trying again later")
            await asyncio.sleep(RUN_INTERVAL_S)

    async def apply(self, now: int) -> int:
        """Delete the media expired at `now`; how many items went (0 when another
        process is applying retention at the moment)."""
        deleted = 0
        async with self.db.pool.connection() as conn:
            if not await store.try_lock(conn):
                return 0
            try:
                for local, lifetime in (
                    (True, self.local_lifetime_ms),
                    (False, self.remote_lifetime_ms),
                ):
                    if lifetime is not None:
                        deleted += await self._delete_expired(local, now - lifetime)
                if self.remote_lifetime_ms is not None:
                    await self._delete_remote_thumbnails(now - self.remote_lifetime_ms)
            finally:
                await store.unlock(conn)
        if deleted:
            log.info("media retention deleted %d items", deleted)
        return deleted

    async def _delete_expired(self, local: bool, before_ts: int) -> int:
        """Delete expired local (or remote) media batch by batch, each its own short
        transaction; the lock's connection stays out of them."""
        deleted = 0
        while True:
            async with self.db.pool.connection() as work:
                keys = await store.expired(work, self.server_name, local=local, before_ts=before_ts)
                if not keys:
                    return deleted
                async with work.transaction():
                    orphans = await admin_store.delete(work, keys)
            await self._unlink(orphans)
            deleted += len(keys)
            if len(keys) < store.BATCH:
                return deleted

    async def _delete_remote_thumbnails(self, before_ts: int) -> None:
        """Thumbnails another server made of media we never fetched whole expire by
        age, with the remote lifetime."""
        async with self.db.pool.connection() as conn, conn.transaction():
            orphans = await store.delete_remote_thumbnails(conn, self.server_name, before_ts)
        await self._unlink(orphans)

    async def _unlink(self, hashes: list[str]) -> None:
        for sha256 in hashes:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(self.files.path_of(sha256).unlink)
