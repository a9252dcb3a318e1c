"""Background delivery to many targets (push gateways' pushers, application services,
federation destinations): one task per target draining its queue in order, never two
at once for a target in any worker process, and backing off from a failing one without
holding up the rest.

Cross-process exclusivity is a PostgreSQL advisory lock per target, taken on a
connection of its own that this process keeps (session locks live as long as their
connection: if it dies, so do the locks, and the next drain takes them again). The locks
asked for while that connection is busy are taken together, as are the releases (with
`try_lock_many` and `unlock_many`, in one statement), so that hundreds of targets woken by
one commit do not queue up there one round trip each; and a target stays locked while
wakes keep coming during its drain. While the database is away, a target whose drain
failed for that tries again in seconds, not after its delivery backoff.

Options for queues that other processes also fill (federation): `has_more` looks at the
queue again once a drain found it empty, for work queued by a process that found the
target locked by us; `pending` feeds a sweep (at start, then every `sweep_interval_s`)
that wakes the queues nobody is draining and re-arms the backoffs they recorded; and
`resume` ends a target's backoff when it shows it is up (`clear_backoff` forgets the
retry time it stored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

from homeserver import metrics
from homeserver.services.core.batching import Coalescer
from homeserver.services.core.clock import now_ms
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Connection, Database, DatabaseError, is_unavailable

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
LockOperation = Callable[[Connection, K], Awaitable[object]]
TryLockMany = Callable[[Connection, list[K]], Awaitable[set[K]]]
UnlockMany = Callable[[Connection, list[K]], Awaitable[object]]
SWEEP_INTERVAL_S = 60.0
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
        try_lock: LockOperation[K] | None = None,
        unlock: LockOperation[K] | None = None,
        label: Callable[[K], str],
        failure_retry_ms: int,
        locked_retry_ms: int | None = None,
        has_more: Callable[[K], Awaitable[bool]] | None = None,
        pending: Callable[[], Awaitable[Iterable[tuple[K, int | None]]]] | None = None,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        clear_backoff: Callable[[K], Awaitable[None]] | None = None,
        name: str = "delivery",
        try_lock_many: TryLockMany[K] | None = None,
        unlock_many: UnlockMany[K] | None = None,
    ) -> None:
        self._name = name
        self._drain = drain
        if (try_lock is None) == (try_lock_many is None) or (unlock is None) == (
            unlock_many is None
        ):
            raise ValueError(
                "give one of try_lock and try_lock_many, one of unlock and unlock_many"
            )
        self._try_lock = try_lock
        self._unlock = unlock
        self._try_lock_many = try_lock_many
        self._unlock_many = unlock_many
        self._lockings: Coalescer[K, bool] = Coalescer(self._lock_batch, f"{name} locks")
        self._releases: Coalescer[K, None] = Coalescer(self._release_batch, f"{name} releases")
        self._label = label
        self._failure_retry_ms = failure_retry_ms
        # Whether to look again when another process holds the target (None: something
        # else, such as a poll, comes back to it).
        self._locked_retry_ms = locked_retry_ms
        self._has_more = has_more
        self._pending = pending
        self._sweep_interval_s = sweep_interval_s
        self._clear_backoff = clear_backoff
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._helpers: set[asyncio.Task[None]] = set()  # the sweep, and resumes
        self._locks = DedicatedConnection(db)
        self._closing = False
        self._sweeping = False
        metrics.sample(self)

    def metric_samples(self) -> Iterable[metrics.Sample]:
        """Targets being delivered to now, and targets waiting out a backoff."""
        doc = "Targets of a delivery queue (federation, push, appservices), by state"
        labels = ("queue", "state")
        yield "homeserver_delivery_targets", doc, labels, (self._name, "draining"), len(self._tasks)
        yield (
            "homeserver_delivery_targets",
            doc,
            labels,
            (self._name, "backing_off"),
            len(self._timers),
        )

    def start(self) -> None:
        """Start the sweep, if there is one (once, however often called)."""
        if self._pending is not None and not self._sweeping:
            self._sweeping = True
            self._spawn(self._sweep_forever(), f"{self._name} sweep")

    async def sweep(self) -> None:
        """One pass of the sweep now (see `_sweep`)."""
        await self._sweep()

    def wake(self, key: K) -> None:
        if self._closing:
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        if key in self._timers:
            return  # backing off: its timer (or a resume) wakes it
        self._tasks[key] = asyncio.create_task(self._run(key), name=self._label(key))

    def resume(self, key: K) -> None:
        """`key` just showed it is up: stop waiting out its backoff."""
        timer = self._timers.pop(key, None)
        if timer is None or self._closing:
            return
        timer.cancel()
        self._spawn(self._resume(key), f"resume {self._label(key)}")

    async def idle(self) -> None:
        """Wait until no drain runs in this process (timers may still be set)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop: timers, the sweep and running drains are cancelled, the lock connection
        closed."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await cancel_and_wait([*self._helpers, *self._tasks.values()])
        await self._lockings.close()
        await self._releases.close()
        await self._locks.close()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _resume(self, key: K) -> None:
        if self._clear_backoff is not None:
            await self._clear_backoff(key)
        self.wake(key)

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._dirty.discard(key)
                if not await self._lockings.run(key):
                    # Another worker process is delivering to it, and may have read its
                    # queue before our work committed.
                    if self._locked_retry_ms is not None:
                        self._schedule(key, now_ms() + self._locked_retry_ms)
                    return
                try:
                    retry_at = await self._drain_while_woken(key)
                finally:
                    await self._release(key)
                if retry_at is not None:
                    self._schedule(key, retry_at)
                    return
                if key in self._dirty:
                    continue
                if self._has_more is not None and await self._has_more(key):
                    continue  # queued by a process that found the target locked by us
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

    async def _drain_while_woken(self, key: K) -> int | None:
        """Drain, again as long as wakes came meanwhile, keeping the lock (what other
        processes queued while we held it is looked for after the release)."""
        while True:
            retry_at = await self._drain(key)
            if retry_at is not None or key not in self._dirty:
                return retry_at
            self._dirty.discard(key)

    async def _lock_batch(self, keys: list[K]) -> list[bool]:
        """Try the locks of `keys` at once; whether each was taken."""

        async def take(conn: Connection) -> set[K]:
            if self._try_lock_many is not None:
                return await self._try_lock_many(conn, keys)
            assert self._try_lock is not None
            return {key for key in keys if await self._try_lock(conn, key)}

        taken = await self._locks.run(take)
        return [key in taken for key in keys]

    async def _release_batch(self, keys: list[K]) -> list[None]:
        async def release(conn: Connection) -> None:
            if self._unlock_many is not None:
                await self._unlock_many(conn, keys)
                return
            assert self._unlock is not None
            for key in keys:
                await self._unlock(conn, key)

        # If the connection died, the locks went with it.
        await self._locks.run_once(release)
        return [None] * len(keys)

    async def _release(self, key: K) -> None:
        try:
            await self._releases.run(key)
        except DatabaseError as exc:
            # A broken lock connection took the lock with it.
            log.warning("%s: cannot let go of the lock: %s", self._label(key), exc)

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

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self._sweep()
            except (DatabaseError, OSError) as exc:
                # While the database is away the pool logs it, once, not every sweep.
                if not is_unavailable(exc):
                    log.warning("%s sweep failed: %s", self._name, exc)
            await asyncio.sleep(self._sweep_interval_s)

    async def _sweep(self) -> None:
        """Wake every queue that has something to deliver and nobody here delivers, or
        wait out the backoff it recorded."""
        assert self._pending is not None
        now = now_ms()
        for key, retry_at in await self._pending():
            if key in self._tasks or key in self._timers:
                continue
            if retry_at is not None and retry_at > now:
                self._schedule(key, retry_at)
            else:
                self.wake(key)
