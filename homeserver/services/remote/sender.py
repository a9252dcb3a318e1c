"""Outbound federation queues: one persistent queue per destination, one transaction in
flight per destination, exponential backoff, and catch-up once it answers again.

`send_pdu`/`send_edu` append to `federation_outbox` (so nothing is lost on a restart) and
wake the destination's sender task. The task takes a session-level advisory lock on the
destination (on one connection this process keeps for its locks; if the process dies the
locks go with it), then sends the queue in order, at most 50 PDUs and 100 EDUs per
transaction, deleting what the destination accepted. On failure it records the backoff in
`destinations`, lets go of the lock and sets a timer; a successful contact with the
destination (an inbound request from it, or any outbound request that it answers) cuts
the wait short. At start, and every minute, a sweep finds queues that nobody is sending
(after a restart, or a crash of another worker) and wakes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from enum import Enum
from typing import Any

import orjson

from federation.identifiers import is_valid_server_name
from homeserver.services.core.clock import now_ms
from homeserver.services.remote.client import FederationClient, FederationError, RequestFailed
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Database, DatabaseError, is_unavailable
from homeserver.storage.remote import outbox
from homeserver.storage.rooms import events as event_store

log = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
SWEEP_INTERVAL_S = 60.0
MAX_CONCURRENT_TRANSACTIONS = 50
TRANSACTION_TIMEOUT_S = 60.0
# When to try again after the database was unavailable.
DATABASE_RETRY_MS = 2000
# Statuses after which resending the same transaction cannot succeed: drop it.
PERMANENT_FAILURES = frozenset({400, 413})


class _Outcome(Enum):
    EMPTY = "empty"
    BACKOFF = "backoff"


class FederationSender:
    """Queues PDUs and EDUs for other servers and delivers them in order."""

    def __init__(
        self,
        db: Database,
        client: FederationClient,
        server_name: str,
        *,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.db = db
        self.client = client
        self.server_name = server_name
        self.min_backoff_ms = int(min_backoff_s * 1000)
        self.max_backoff_ms = int(max_backoff_s * 1000)
        self.sweep_interval_s = sweep_interval_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._resumers: set[asyncio.Task[None]] = set()
        self._locks = DedicatedConnection(db)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_TRANSACTIONS)
        self._sweeper: asyncio.Task[None] | None = None
        # Unique per process life: a retried batch reuses its id, a restart never does.
        self._txn_prefix = f"{now_ms()}{random.randrange(1000):03d}"
        self._closing = False

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        """Stop sending; what is still queued stays in the outbox for the next start."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [
            t for t in (self._sweeper, *self._resumers, *self._tasks.values()) if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._locks.close()

    # ---- the service API

    async def send_pdu(self, destinations: Iterable[str], event_id: str) -> None:
        """Queue one of our events for these servers (ourselves and bad names skipped)."""
        targets = sorted(
            {d for d in destinations if d != self.server_name and is_valid_server_name(d)}
        )
        if not targets:
            return
        async with self.db.pool.connection() as conn:
            await outbox.enqueue_pdus(conn, targets, event_id)
        for destination in targets:
            self._wake(destination)

    async def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        if destination == self.server_name or not is_valid_server_name(destination):
            return
        edu = orjson.dumps({"edu_type": edu_type, "content": content}).decode()
        async with self.db.pool.connection() as conn:
            await outbox.enqueue_edu(conn, destination, edu)
        self._wake(destination)

    def on_contact(self, destination: str) -> None:
        """`destination` just showed it is up: stop waiting out its backoff."""
        timer = self._timers.pop(destination, None)
        if timer is None or self._closing:
            return
        timer.cancel()
        task = asyncio.create_task(self._resume(destination))
        self._resumers.add(task)
        task.add_done_callback(self._resumers.discard)

    async def _resume(self, destination: str) -> None:
        async with self.db.pool.connection() as conn:
            await outbox.clear_retry(conn, destination)
        self._wake(destination)

    # ---- the per-destination task

    def _wake(self, destination: str) -> None:
        if self._closing:
            return
        if destination in self._tasks:
            self._dirty.add(destination)
            return
        timer = self._timers.get(destination)
        if timer is not None:
            return  # backing off: the timer (or a contact) wakes it
        self._tasks[destination] = asyncio.create_task(
            self._run(destination), name=f"fed-send {destination}"
        )

    async def _run(self, destination: str) -> None:
        try:
            while True:
                self._dirty.discard(destination)
                retry_at: int | None = None
                if not await self._try_lock(destination):
                    return  # another worker process is sending to it
                try:
                    outcome, retry_at = await self._drain(destination)
                finally:
                    await self._unlock(destination)
                if outcome is _Outcome.BACKOFF:
                    assert retry_at is not None
                    self._schedule(destination, retry_at)
                    return
                if destination in self._dirty:
                    continue
                async with self.db.pool.connection() as conn:
                    # Rows another process queued while we held the lock.
                    if not await outbox.has_rows(conn, destination):
                        if destination not in self._dirty:
                            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                log.info("federation sender for %s: database unavailable", destination)
                self._schedule(destination, now_ms() + DATABASE_RETRY_MS)
            else:
                log.exception("federation sender for %s failed; retrying later", destination)
                self._schedule(destination, now_ms() + self.max_backoff_ms // 60)
        finally:
            if self._tasks.get(destination) is asyncio.current_task():
                del self._tasks[destination]

    def _schedule(self, destination: str, retry_at: int) -> None:
        if self._closing:
            return
        old = self._timers.pop(destination, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, (retry_at - now_ms()) / 1000)
        loop = asyncio.get_running_loop()
        self._timers[destination] = loop.call_later(delay, self._timer_fired, destination)

    def _timer_fired(self, destination: str) -> None:
        self._timers.pop(destination, None)
        self._wake(destination)

    async def _drain(self, destination: str) -> tuple[_Outcome, int | None]:
        """Send transactions until the queue is empty or the destination fails."""
        while True:
            async with self.db.pool.connection() as conn:
                health = await outbox.get_health(conn, destination)
                if health.retry_at_ts is not None and health.retry_at_ts > now_ms():
                    return _Outcome.BACKOFF, health.retry_at_ts
                rows = await outbox.next_rows(
                    conn, destination, MAX_PDUS_PER_TRANSACTION + MAX_EDUS_PER_TRANSACTION
                )
                batch = _batch(rows)
                if not batch:
                    return _Outcome.EMPTY, None
                pdu_ids = [r.event_id for r in batch if r.event_id is not None]
                stored = await event_store.get_events(conn, pdu_ids)
            transaction = {
                "origin": self.server_name,
                "origin_server_ts": now_ms(),
                "pdus": [orjson.loads(stored[e].json) for e in pdu_ids if e in stored],
                "edus": [orjson.loads(r.edu_json) for r in batch if r.edu_json is not None],
            }
            txn_id = f"{self._txn_prefix}.{batch[0].position}-{batch[-1].position}"
            try:
                async with self._slots:
                    answer = await self.client.put_json(
                        destination,
                        f"/_matrix/federation/v1/send/{txn_id}",
                        transaction,
                        time_limit=TRANSACTION_TIMEOUT_S,
                    )
            except FederationError as exc:
                if isinstance(exc, RequestFailed) and exc.status in PERMANENT_FAILURES:
                    log.warning("%s refused transaction %s for good: %s", destination, txn_id, exc)
                else:
                    return _Outcome.BACKOFF, await self._record_failure(destination, health, exc)
            else:
                _log_pdu_errors(destination, answer)
            async with self.db.pool.connection() as conn:
                async with conn.transaction():
                    await outbox.delete_rows(conn, [r.position for r in batch])
                    await outbox.record_success(conn, destination, now_ms())

    async def _record_failure(
        self, destination: str, health: outbox.DestinationHealth, exc: Exception
    ) -> int:
        interval = min(max(health.retry_interval_ms * 2, self.min_backoff_ms), self.max_backoff_ms)
        retry_at = now_ms() + interval
        log.info("cannot send to %s (retry in %.1f s): %s", destination, interval / 1000, exc)
        async with self.db.pool.connection() as conn:
            await outbox.record_failure(conn, destination, interval, retry_at, str(exc))
        return retry_at

    # ---- cross-process exclusivity

    async def _try_lock(self, destination: str) -> bool:
        return await self._locks.run(lambda conn: outbox.try_lock_destination(conn, destination))

    async def _unlock(self, destination: str) -> None:
        # If the connection died, the lock went with it.
        with contextlib.suppress(DatabaseError):
            await self._locks.run_once(lambda conn: outbox.unlock_destination(conn, destination))

    # ---- the sweep

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self._sweep()
            except (DatabaseError, OSError) as exc:
                log.warning("federation queue sweep failed: %s", exc)
            await asyncio.sleep(self.sweep_interval_s)

    async def _sweep(self) -> None:
        """Wake every queue that has something to send and is not backing off here."""
        async with self.db.pool.connection() as conn:
            pending = await outbox.pending_destinations(conn)
        now = now_ms()
        for destination, retry_at in pending:
            if destination in self._tasks or destination in self._timers:
                continue
            if retry_at is not None and retry_at > now:
                self._schedule(destination, retry_at)
            else:
                self._wake(destination)


def _batch(rows: list[outbox.OutboxRow]) -> list[outbox.OutboxRow]:
    """The longest prefix of the queue within the per-transaction limits, so that order
    is kept across transactions."""
    batch: list[outbox.OutboxRow] = []
    pdus = edus = 0
    for row in rows:
        if row.kind == "pdu":
            if pdus == MAX_PDUS_PER_TRANSACTION:
                break
            pdus += 1
        else:
            if edus == MAX_EDUS_PER_TRANSACTION:
                break
            edus += 1
        batch.append(row)
    return batch


def _log_pdu_errors(destination: str, answer: Any) -> None:
    results = answer.get("pdus") if isinstance(answer, dict) else None
    if not isinstance(results, dict):
        return
    for event_id, result in results.items():
        if isinstance(result, dict) and result.get("error"):
            log.info("%s rejected %s: %s", destination, event_id, str(result["error"])[:200])
