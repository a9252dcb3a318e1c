"""Background delivery to many targets (push gateways' pushers, application services):
one task per target draining its queue in order, never two at once for a target in
any worker process, and backing off from a failing one without holding up the rest.

Cross-process exclusivity is a PostgreSQL advisory lock per target, taken on a
connection of its own that this process keeps (session locks live as long as their
connection: if it dies, so do the locks, and the next drain takes them again). While
the database is away, a target whose drain failed for that tries again in seconds, not
after its delivery backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from homeserver.services.core.clock import now_ms
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Connection, Database, is_unavailable

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
LockOperation = Callable[[Connection, K], Awaitable[object]]
# When to try again after the database was unavailable.
DATABASE_RETRY_MS = 2000


class DeliveryWorkers(Generic[K]):
    """`wake(key)` runs `drain(key)` under the target's lock; `drain` returns the time
    (ms) to try again at after a failure, or None when the queue is empty. A wake
    during a drain makes it drain again; a wake while backing off waits for the timer."""

    def __init__(
        self,
        db: Database,
        *,
        drain: Callable[[K], Awaitable[int | None]],
        try_lock: LockOperation[K],
        unlock: LockOperation[K],
        label: Callable[[K], str],
        failure_retry_ms: int,
        locked_retry_ms: int | None = None,
    ) -> None:
        self._drain = drain
        self._try_lock = try_lock
        self._unlock = unlock
        self._label = label
        self._failure_retry_ms = failure_retry_ms
        # Whether to look again when another process holds the target (None: something
        # else, such as a poll, comes back to it).
        self._locked_retry_ms = locked_retry_ms
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._locks = DedicatedConnection(db)
        self._closing = False

    def wake(self, key: K) -> None:
        if self._closing:
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        if key in self._timers:
            return  # backing off: its timer wakes it
        self._tasks[key] = asyncio.create_task(self._run(key), name=self._label(key))

    async def close(self) -> None:
        """Stop: timers and running drains are cancelled, the lock connection closed."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._locks.close()

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._dirty.discard(key)
                if not await self._locks.run(lambda conn: self._try_lock(conn, key)):
                    # Another worker process is delivering to it, and may have read its
                    # queue before our work committed.
                    if self._locked_retry_ms is not None:
                        self._schedule(key, now_ms() + self._locked_retry_ms)
                    return
                try:
                    retry_at = await self._drain(key)
                finally:
                    # If the connection died, the lock went with it.
                    await self._locks.run_once(lambda conn: self._unlock(conn, key))
                if retry_at is not None:
                    self._schedule(key, retry_at)
                    return
                if key not in self._dirty:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                log.info("%s: database unavailable; retrying shortly", self._label(key))
                self._schedule(key, now_ms() + DATABASE_RETRY_MS)
            else:
                log.exception("%s: delivery failed; retrying later", self._label(key))
                self._schedule(key, now_ms() + self._failure_retry_ms)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    def _schedule(self, key: K, retry_at: int) -> None:
        if self._closing:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, (retry_at - now_ms()) / 1000)
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._timer_fired, key)

    def _timer_fired(self, key: K) -> None:
        self._timers.pop(key, None)
        self.wake(key)
