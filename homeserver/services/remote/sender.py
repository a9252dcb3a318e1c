"""Outbound federation queues: one persistent queue per destination, one transaction in
flight per destination, exponential backoff, and catch-up once it answers again.

`send_pdu`/`send_edu` append to `federation_outbox` (so nothing is lost on a restart) and
wake the destination's sender task; a new event of ours is queued by `queue_pdu` in the
transaction that writes it, and `wake` follows the commit. The tasks are the delivery
workers push gateways and application services use too (services/core/delivery.py).
A task takes a session-level advisory lock on the destination (on one connection this
process keeps for its locks; if the process dies the locks go with it), then sends the
queue in order, at most 50 PDUs and 100 EDUs per transaction, deleting what the
destination accepted. Each transaction is recorded on its outbox rows (id, send time,
which rows) before it is sent, so a retry, by this process or by the one that takes the
destination over after a crash, sends the same txnId with the same contents. One commit
to a busy room wakes hundreds of destinations at once, so their round trips are made
together (services/core/batching.py): the locks are taken in one statement, the next
transactions of all of them read and recorded in another, and the answered ones deleted
(with their destinations' success) in a third, after the requests went out. On
failure it records the backoff in `destinations`, lets go of the lock and sets a timer;
a successful contact with the destination (an inbound request from it, or any outbound
request that it answers) cuts the wait short. At start, and every few seconds, a sweep
finds queues that nobody is sending (after a restart, or a crash of another worker) and
wakes them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from federation.identifiers import is_valid_server_name
from homeserver import metrics
from homeserver.services.core.batching import Coalescer
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.remote.client import FederationClient, FederationError, RequestFailed
from homeserver.storage.core.pool import Connection, Database, DatabaseError
from homeserver.storage.remote import outbox
from homeserver.storage.rooms import events as event_store

log = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
# Short, so that another process takes over a dead one's queues within seconds.
SWEEP_INTERVAL_S = 5.0
MAX_CONCURRENT_TRANSACTIONS = 50
# Events whose JSON is kept for the other destinations they are queued for.
SENT_JSON_CACHE = 512
TRANSACTION_TIMEOUT_S = 60.0
# Statuses after which resending the same transaction cannot succeed: drop it.
PERMANENT_FAILURES = frozenset({400, 413})


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
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_TRANSACTIONS)
        self._sent_json: dict[str, str] = {}
        # Destinations some request failed to reach lately (see on_unreachable).
        self._unreachable: set[str] = set()
        self._notes: set[asyncio.Task[None]] = set()
        # One commit wakes every destination of a room: their reads of the queue, and
        # their book-keeping once answered, are made together.
        self._begins: Coalescer[str, _Next] = Coalescer(self._begin_batch, "fed-send begin")
        self._finishes: Coalescer[_Answered, None] = Coalescer(
            self._finish_batch, "fed-send finish"
        )
        self._checks: Coalescer[str, bool] = Coalescer(self._check_batch, "fed-send check")
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock_many=outbox.try_lock_destinations,
            unlock_many=outbox.unlock_destinations,
            label=lambda destination: f"fed-send {destination}",
            failure_retry_ms=self.max_backoff_ms // 60,
            has_more=self._has_rows,
            pending=self._pending,
            sweep_interval_s=sweep_interval_s,
            clear_backoff=self._clear_retry,
            name="federation",
        )

    async def start(self) -> None:
        self._workers.start()

    async def close(self) -> None:
        """Stop sending; what is still queued stays in the outbox for the next start."""
        await cancel_and_wait(list(self._notes))
        await self._workers.close()
        for batches in (self._begins, self._finishes, self._checks):
            await batches.close()

    # ---- the service API

    async def send_pdu(self, destinations: Iterable[str], event_id: str) -> None:
        """Queue one of our events for these servers (ourselves and bad names skipped)."""
        async with self.db.pool.connection() as conn:
            targets = await self.queue_pdu(conn, destinations, event_id)
        self.wake(targets)

    async def queue_pdu(
        self, conn: Connection, destinations: Iterable[str], event_id: str
    ) -> list[str]:
        """Queue an event for these servers on `conn`, inside the transaction that writes
        the event, so that a crash cannot keep one without the other; the servers to
        `wake` once it commits."""
        targets = sorted(
            {d for d in destinations if d != self.server_name and is_valid_server_name(d)}
        )
        if targets:
            await outbox.enqueue_pdus(conn, targets, event_id)
        return targets

    def wake(self, destinations: Iterable[str]) -> None:
        """Rows for these servers were committed: send them."""
        for destination in destinations:
            self._workers.wake(destination)

    async def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        if destination == self.server_name or not is_valid_server_name(destination):
            return
        edu = orjson.dumps({"edu_type": edu_type, "content": content}).decode()
        async with self.db.pool.connection() as conn:
            await outbox.enqueue_edu(conn, destination, edu)
        self._workers.wake(destination)

    def on_contact(self, destination: str) -> None:
        """`destination` just showed it is up: stop waiting out its backoff, and forget
        the failures other requests of this process recorded."""
        self._workers.resume(destination)
        if destination in self._unreachable:
            self._unreachable.discard(destination)
            self._note(lambda conn, d: outbox.record_success(conn, d, now_ms()), destination)

    def on_unreachable(self, destination: str, error: str) -> None:
        """A request other than our transactions could not reach `destination`: it
        advances the destination's backoff as the sender's own failures do, unless a
        backoff is already running (a burst of failing requests counts once). Requests
        are not refused during a backoff; only the queue waits it out."""
        self._unreachable.add(destination)

        async def advance(conn: Connection, destination: str) -> None:
            health = await outbox.get_health(conn, destination)
            now = now_ms()
            if health.retry_at_ts is not None and health.retry_at_ts > now:
                return
            interval = self._next_interval(health)
            await outbox.record_failure(conn, destination, interval, now + interval, error)
            metrics.FEDERATION_BACKOFF.labels(destination).set(interval / 1000)

        self._note(advance, destination)

    def _next_interval(self, health: outbox.DestinationHealth) -> int:
        """The backoff after one more failure: doubling, within the configured bounds."""
        doubled = health.retry_interval_ms * 2
        return min(max(doubled, self.min_backoff_ms), self.max_backoff_ms)

    def _note(self, write: Callable[[Connection, str], Awaitable[None]], destination: str) -> None:
        async def run() -> None:
            try:
                async with self.db.pool.connection() as conn:
                    await write(conn, destination)
            except DatabaseError as exc:
                log.warning("cannot record the state of %s: %s", destination, exc)

        task = asyncio.create_task(run(), name=f"destination state {destination}")
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    # ---- the queues, for the delivery workers

    async def _has_rows(self, destination: str) -> bool:
        return await self._checks.run(destination)

    async def _check_batch(self, destinations: list[str]) -> list[bool]:
        async with self.db.pool.connection() as conn:
            queued = await outbox.with_rows(conn, destinations)
        return [d in queued for d in destinations]

    async def _pending(self) -> list[tuple[str, int | None]]:
        async with self.db.pool.connection() as conn:
            return await outbox.pending_destinations(conn)

    async def _clear_retry(self, destination: str) -> None:
        async with self.db.pool.connection() as conn:
            await outbox.clear_retry(conn, destination)

    async def _drain(self, destination: str) -> int | None:
        """Send transactions until the queue is empty (None) or the destination fails
        (the time to try again at). Once a transaction is answered, its rows are deleted
        and the next one is read from the queue."""
        while True:
            step = await self._begins.run(destination)
            if step.retry_at is not None:
                return step.retry_at
            recorded = step.transaction
            if recorded is None:
                return None
            txn_id = recorded.txn_id
            transaction = {
                "origin": self.server_name,
                "origin_server_ts": recorded.origin_server_ts,
                "pdus": [orjson.loads(j) for j in step.pdus],
                "edus": [orjson.loads(r.edu_json) for r in recorded.rows if r.edu_json is not None],
            }
            try:
                async with self._slots:
                    answer = await self.client.put_json(
                        destination,
                        f"/_matrix/federation/v1/send/{txn_id}",
                        transaction,
                        time_limit=TRANSACTION_TIMEOUT_S,
                        report_failure=False,
                    )
            except FederationError as exc:
                if isinstance(exc, RequestFailed) and exc.status in PERMANENT_FAILURES:
                    log.warning("%s refused transaction %s for good: %s", destination, txn_id, exc)
                else:
                    return await self._record_failure(destination, step.health, exc)
            else:
                _log_pdu_errors(destination, answer)
            await self._finishes.run(_Answered(destination, [r.position for r in recorded.rows]))
            metrics.FEDERATION_BACKOFF.labels(destination).set(0)

    async def _begin_batch(self, destinations: list[str]) -> list[_Next]:
        """What each of these destinations sends next, read (and a new transaction
        recorded before it is sent) for all of them at once. The id of a new one is the
        time of recording with a random part: unique without any state of the process,
        and never one a peer saw from the database a backup was restored from (that
        database's recorded transactions keep their contents)."""
        ts = now_ms()
        txn_ids = {d: f"{ts}.{secrets.token_hex(6)}" for d in destinations}
        limits = outbox.TransactionLimits(MAX_PDUS_PER_TRANSACTION, MAX_EDUS_PER_TRANSACTION)
        async with self.db.pool.connection() as conn:
            healths, transactions = await outbox.begin_transactions(conn, txn_ids, ts, ts, limits)
            pdu_ids = {
                r.event_id for t in transactions.values() for r in t.rows if r.event_id is not None
            }
            stored = await self._pdu_json(conn, sorted(pdu_ids))
        steps = []
        for destination in destinations:
            health = healths.get(destination, outbox.DestinationHealth(0, 0, None))
            transaction = transactions.get(destination)
            if health.retry_at_ts is not None and health.retry_at_ts > ts and transaction is None:
                steps.append(_Next(health, health.retry_at_ts, None, []))
                continue
            pdus = [] if transaction is None else transaction.rows
            json = [stored[r.event_id] for r in pdus if r.event_id in stored]
            steps.append(_Next(health, None, transaction, json))
        return steps

    async def _finish_batch(self, answered: list[_Answered]) -> list[None]:
        destinations = [a.destination for a in answered]
        positions = [p for a in answered for p in a.positions]
        async with self.db.pool.connection() as conn:
            await outbox.finish_transactions(conn, destinations, positions, now_ms())
        return [None] * len(answered)

    async def _pdu_json(self, conn: Connection, event_ids: list[str]) -> dict[str, str]:
        """The stored JSON of events to send: a message to a busy room goes to every
        destination, so the recent ones are kept (an event's JSON never changes)."""
        out = {e: self._sent_json[e] for e in event_ids if e in self._sent_json}
        missing = [e for e in event_ids if e not in out]
        if not missing:
            return out
        for event_id, row in (await event_store.get_events(conn, missing)).items():
            out[event_id] = self._sent_json[event_id] = row.json
            if len(self._sent_json) > SENT_JSON_CACHE:
                del self._sent_json[next(iter(self._sent_json))]
        return out

    async def _record_failure(
        self, destination: str, health: outbox.DestinationHealth, exc: Exception
    ) -> int:
        interval = self._next_interval(health)
        retry_at = now_ms() + interval
        log.info("cannot send to %s (retry in %.1f s): %s", destination, interval / 1000, exc)
        async with self.db.pool.connection() as conn:
            await outbox.record_failure(conn, destination, interval, retry_at, str(exc))
        metrics.FEDERATION_FAILURES.labels(destination).inc()
        metrics.FEDERATION_BACKOFF.labels(destination).set(interval / 1000)
        return retry_at


@dataclass(frozen=True, slots=True)
class _Next:
    """What a destination's drain does next: wait until `retry_at`, send `transaction`
    (with the JSON of its PDUs, in order), or nothing (its queue is empty)."""

    health: outbox.DestinationHealth
    retry_at: int | None
    transaction: outbox.RecordedTransaction | None
    pdus: list[str]


@dataclass(frozen=True, slots=True)
class _Answered:
    destination: str
    positions: list[int]


def _log_pdu_errors(destination: str, answer: Any) -> None:
    results = answer.get("pdus") if isinstance(answer, dict) else None
    if not isinstance(results, dict):
        return
    for event_id, result in results.items():
        if isinstance(result, dict) and result.get("error"):
            log.info("%s rejected %s: %s", destination, event_id, str(result["error"])[:200])
