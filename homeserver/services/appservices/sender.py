"""Talking to application services: pushing them the events they are interested in
(`PUT /_matrix/app/v1/transactions/{txnId}`), asking them about aliases in their
namespaces, and pinging them.

The send path only calls `notify()` (never waits); a background task per application
service does the rest. Its row in `appservice_delivery` is the queue's cursor: events
are read in stream order up to the events stream's safe position, filtered by interest,
and sent in batches. A batch is written down as the pending transaction (txnId and event
ids) before it goes out, so a retry, after a 5xx, a timeout or a restart, sends the same
events under the same txnId, and the cursor moves past them only once the AS answered
2xx: each event is handed over once. A task holds a session-level advisory lock on its
AS, so worker processes on one database never deliver twice; a poll (every
`poll_interval_s`) picks up events other processes or federation committed.

Services registered with `receive_ephemeral` (or MSC2409's key) also get the typing,
public read receipts and presence of the rooms and users they are interested in, in the
transactions' `ephemeral` list. Receipts and presence are read from their streams behind
cursors kept next to the events one (and recorded with the pending transaction), so they
survive restarts like events; typing lives in memory and is sent best-effort from this
process's typing position. Their writers only wake the sender (`ephemeral_changed`).

`query_user` and `query_alias` ask services about users and aliases in their namespaces
that do not exist yet (`/_matrix/app/v1/users/{userId}`, `/rooms/{roomAlias}`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson

from homeserver.services.appservices.registry import (
    AppService,
    AppServiceRegistry,
    RoomFacts,
    is_interested_in_event,
    is_interested_in_room,
)
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.timeline.format import format_events
from homeserver.storage.accounts import accounts
from homeserver.storage.appservices import appservices as store
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database, DatabaseError, is_unavailable

if TYPE_CHECKING:
    from homeserver.services.ephemeral.presence import PresenceService
    from homeserver.services.ephemeral.typing import TypingService

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
POLL_INTERVAL_S = 1.0
# Short, so that another process takes over a dead one's services within seconds.
SWEEP_INTERVAL_S = 5.0
LOCKED_RETRY_S = 1.0
# Events looked at per round, and so the most one transaction carries.
BATCH = 100
REQUEST_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 * 1024


# Where MSC2409 put the ephemeral list, for services registered with its key.
EPHEMERAL_UNSTABLE_TXN = "de.sorunome.msc2409.ephemeral"


class _EphemeralBatch:
    """The ephemeral part of a transaction being built, and the cursors it reaches."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.receipts_up_to: int | None = None
        self.presence_up_to: int | None = None
        self.moved = False  # some stream moved, so the cursors must be saved


class BadStatus(ServiceError):
    """The AS answered a ping with an error: 502 M_BAD_STATUS, with its `status` and
    `body` (fields named like ServiceError's own, so the API renders them itself)."""

    def __init__(self, as_status: int, as_body: str) -> None:
        super().__init__(502, "M_BAD_STATUS", "The application service answered with an error")
        self.as_status = as_status
        self.as_body = as_body


def _app_url(service: AppService, path: str) -> str:
    assert service.url is not None
    return service.url.rstrip("/") + "/_matrix/app/v1" + path


class AppServiceSender:
    """`hs.appservices_sender`: `start()`, `notify()` after commits, `close()` at exit;
    also `ping` and `query_alias` for the client API."""

    def __init__(
        self,
        db: Database,
        cache: EventCache,
        registry: AppServiceRegistry,
        *,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        typing: TypingService | None = None,
        presence: PresenceService | None = None,
    ) -> None:
        self.db = db
        self.typing = typing
        self.presence = presence
        self.cache = cache
        self.registry = registry
        self.min_backoff_ms = int(min_backoff_s * 1000)
        self.max_backoff_ms = int(max_backoff_s * 1000)
        self.poll_interval_s = poll_interval_s
        self._targets = [s for s in registry.services if s.url]
        self._ephemeral = any(s.receive_ephemeral for s in self._targets)
        # Per AS: the typing position up to which changes were looked at (memory only).
        self._typing_seen: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._wakeup = asyncio.Event()
        by_id = {s.id: s for s in self._targets}
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=lambda as_id: self._drain(by_id[as_id]),
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda as_id: f"appservice {as_id}",
            failure_retry_ms=self.max_backoff_ms,
            name="appservices",
        )
        self._background: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        if not self.registry.services:
            return
        self._session = aiohttp.ClientSession(
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            headers={"User-Agent": "homeserver"},
        )
        if self.typing is not None:
            self._typing_seen = {s.id: self.typing.position for s in self._targets}
        if self._targets:
            self._background = [
                asyncio.create_task(self._dispatch_forever(), name="appservice dispatch")
            ]

    async def close(self) -> None:
        """Stop sending; what is unsent stays behind the cursors (and pending) for next time."""
        self._closing = True
        await cancel_and_wait(self._background)
        await self._workers.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def notify(self) -> None:
        """Events were committed: look for ones to deliver. Never waits."""
        if self._targets and not self._closing:
            self._wakeup.set()

    async def ephemeral_changed(self, *_: object) -> None:
        """A listener of typing, receipt and presence changes made here: wake the sender
        when a service wants ephemeral data. Changes of other processes and typing
        timeouts are seen by the poll."""
        if self._ephemeral:
            self.notify()

    # ---- scheduling

    async def _dispatch_forever(self) -> None:
        """Wake every AS's task on `notify()`; otherwise poll the events stream (for what
        federation or other processes committed), waking them only when it moved, or
        after a sweep interval (work another process left behind)."""
        polled: tuple[int, ...] = ()
        swept = time.monotonic()
        while True:
            notified = True
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval_s)
            except TimeoutError:
                notified = False
            self._wakeup.clear()
            if not notified and time.monotonic() - swept < SWEEP_INTERVAL_S:
                try:
                    safe = await self._poll_positions()
                except (DatabaseError, OSError) as exc:
                    # While the database is away the pool logs it, once, not every poll.
                    if not is_unavailable(exc):
                        log.exception("appservice: cannot read the stream positions")
                    continue
                if safe == polled:
                    continue
                polled = safe
            if not notified:
                swept = time.monotonic()
            for service in self._targets:
                self._workers.wake(service.id)

    async def _poll_positions(self) -> tuple[int, ...]:
        """The positions whose moving means there may be something to send."""
        async with self.db.pool.connection() as conn:
            safe = await streams.safe_positions(conn)
        if not self._ephemeral:
            return (safe["events"],)
        typing = self.typing.position if self.typing is not None else 0
        return (safe["events"], safe["receipts"], safe["presence"], typing)

    # ---- delivery

    async def _drain(self, service: AppService) -> int | None:
        """Deliver everything due, in order; the time to retry at when the AS failed."""
        while True:
            async with self.db.pool.connection() as conn:
                safe = await streams.safe_positions(conn)
                ephemeral_start = (
                    (safe["receipts"], safe["presence"]) if service.receive_ephemeral else None
                )
                state = await store.delivery_state(
                    conn, service.id, safe["events"], ephemeral_start
                )
                if state.retry_at is not None and state.retry_at > now_ms():
                    return state.retry_at
                if state.pending_txn_id is not None and state.pending_up_to is not None:
                    txn_id, event_ids = state.pending_txn_id, state.pending_event_ids
                    up_to = state.pending_up_to
                    ephemeral = state.pending_ephemeral or []
                    receipts_up_to = state.pending_receipts_up_to
                    presence_up_to = state.pending_presence_up_to
                else:
                    heads = await store.events_after(
                        conn, state.last_stream_ordering, safe["events"], BATCH
                    )
                    up_to = heads[-1].stream_ordering if len(heads) == BATCH else safe["events"]
                    event_ids = await self._interesting(conn, service, heads) if heads else []
                    batch = await self._ephemeral_batch(conn, service, state, safe)
                    if not heads and not batch.moved:
                        return None
                    ephemeral = batch.events
                    receipts_up_to, presence_up_to = batch.receipts_up_to, batch.presence_up_to
                    if not event_ids and not ephemeral:
                        await store.complete(
                            conn,
                            service.id,
                            up_to,
                            used_txn=False,
                            receipts_up_to=receipts_up_to,
                            presence_up_to=presence_up_to,
                        )
                        continue
                    txn_id = state.next_txn_id
                    await store.record_pending(
                        conn,
                        service.id,
                        txn_id,
                        event_ids,
                        up_to,
                        ephemeral,
                        receipts_up_to,
                        presence_up_to,
                    )
                events = await format_events(conn, self.cache, event_ids) if event_ids else []
            if await self._put_transaction(service, txn_id, events, ephemeral):
                async with self.db.pool.connection() as conn:
                    await store.complete(
                        conn,
                        service.id,
                        up_to,
                        used_txn=True,
                        receipts_up_to=receipts_up_to,
                        presence_up_to=presence_up_to,
                    )
                continue
            now = now_ms()
            since = state.failing_since if state.failing_since is not None else now
            interval = min(max(now - since, self.min_backoff_ms), self.max_backoff_ms)
            async with self.db.pool.connection() as conn:
                await store.record_failure(conn, service.id, since, now + interval)
            return now + interval

    async def _ephemeral_batch(
        self,
        conn: Connection,
        service: AppService,
        state: store.DeliveryState,
        safe: dict[str, int],
    ) -> _EphemeralBatch:
        """The typing, receipts and presence the AS is interested in since its cursors
        (nothing when it does not receive ephemeral data)."""
        batch = _EphemeralBatch()
        if not service.receive_ephemeral:
            return batch
        if state.receipts_position is not None:
            rows = await store.receipts_after(
                conn, state.receipts_position, safe["receipts"], BATCH
            )
            batch.receipts_up_to = rows[-1].stream_id if len(rows) == BATCH else safe["receipts"]
            batch.moved |= bool(rows)
            by_room: dict[str, dict[str, Any]] = {}
            facts = await self._facts(conn, {r.room_id for r in rows})
            for r in rows:
                if not is_interested_in_room(service, r.room_id, facts[r.room_id]):
                    continue
                receipt: dict[str, Any] = {"ts": r.ts}
                if r.thread_id:
                    receipt["thread_id"] = r.thread_id
                content = by_room.setdefault(r.room_id, {})
                content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = (
                    receipt
                )
            batch.events += [
                {"type": "m.receipt", "room_id": room_id, "content": content}
                for room_id, content in by_room.items()
            ]
        if self.typing is not None:
            seen = self._typing_seen.get(service.id, self.typing.position)
            self._typing_seen[service.id] = self.typing.position
            rooms = self.typing.rooms_changed_since(seen)
            batch.moved |= bool(rooms)
            facts = await self._facts(conn, rooms)
            batch.events += [
                {
                    "type": "m.typing",
                    "room_id": room_id,
                    "content": {"user_ids": self.typing.typing_in(room_id)},
                }
                for room_id in sorted(rooms)
                if is_interested_in_room(service, room_id, facts[room_id])
            ]
        if state.presence_position is not None and self.presence is not None:
            changed = await store.presence_after(
                conn, state.presence_position, safe["presence"], BATCH
            )
            batch.presence_up_to = (
                changed[-1].stream_id if len(changed) == BATCH else safe["presence"]
            )
            batch.moved |= bool(changed)
            rooms_of = await store.joined_rooms_of(conn, [p.user_id for p in changed])
            facts = await self._facts(conn, {r for rs in rooms_of.values() for r in rs})
            now = now_ms()
            batch.events += [
                {
                    "type": "m.presence",
                    "sender": p.user_id,
                    "content": self.presence.content(p, now),
                }
                for p in changed
                if service.is_interested_in_user(p.user_id)
                or any(
                    is_interested_in_room(service, r, facts[r]) for r in rooms_of.get(p.user_id, ())
                )
            ]
        return batch

    @staticmethod
    async def _facts(conn: Connection, room_ids: set[str]) -> dict[str, RoomFacts]:
        if not room_ids:
            return {}
        return {
            room_id: RoomFacts(members, aliases)
            for room_id, (members, aliases) in (
                await store.room_members_and_aliases(conn, sorted(room_ids))
            ).items()
        }

    async def _interesting(
        self, conn: Connection, service: AppService, heads: Sequence[store.EventHead]
    ) -> list[str]:
        """The ids of the events the AS is interested in, in order."""
        room_ids = sorted({h.room_id for h in heads})
        facts = {
            room_id: RoomFacts(members, aliases)
            for room_id, (members, aliases) in (
                await store.room_members_and_aliases(conn, room_ids)
            ).items()
        }
        return [
            h.event_id
            for h in heads
            if is_interested_in_event(
                service, h.room_id, h.sender, h.type, h.state_key, facts[h.room_id]
            )
        ]

    async def _put_transaction(
        self,
        service: AppService,
        txn_id: int,
        events: list[dict[str, Any]],
        ephemeral: list[dict[str, Any]],
    ) -> bool:
        """PUT one transaction; True once the AS has taken it (any 2xx)."""
        url = _app_url(service, f"/transactions/{txn_id}")
        body: dict[str, Any] = {"events": events}
        if service.receive_ephemeral:
            body["ephemeral"] = ephemeral
            if service.ephemeral_unstable:
                body[EPHEMERAL_UNSTABLE_TXN] = ephemeral
        try:
            async with self._http().put(
                url,
                data=orjson.dumps(body),
                headers=self._headers(service),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as resp:
                await resp.content.read(MAX_ANSWER_BYTES)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("appservice %s: unreachable: %s", service.id, exc or type(exc).__name__)
            return False
        if 200 <= status < 300:
            return True
        log.info("appservice %s: transaction %d answered %d", service.id, txn_id, status)
        return False

    # ---- queries and ping

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AppServiceSender.start() was not called")
        return self._session

    @staticmethod
    def _headers(service: AppService) -> dict[str, str]:
        return {"Authorization": f"Bearer {service.hs_token}", "Content-Type": "application/json"}

    async def _query(self, service: AppService, path: str) -> bool:
        """GET a query endpoint; True when the AS answered 2xx (it knows the thing)."""
        try:
            async with self._http().get(
                _app_url(service, path),
                headers=self._headers(service),
                timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S),
            ) as resp:
                await resp.content.read(MAX_ANSWER_BYTES)
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("appservice %s: query failed: %s", service.id, exc or type(exc).__name__)
            return False

    async def query_alias(self, alias: str) -> bool:
        """Ask the ASes whose alias namespace holds `alias` to create it; True if one did."""
        for service in self.registry.services_for_alias_query(alias):
            if await self._query(service, "/rooms/" + quote(alias, safe="")):
                return True
        return False

    async def query_user(self, user_id: str) -> bool:
        """A local user that does not exist, in a service's user namespace: ask the
        service(s) to create it (each query bounded by QUERY_TIMEOUT_S); True once an
        answer of 2xx left the user existing."""
        services = self.registry.services_for_user_query(user_id)
        if not services:
            return False
        for service in services:
            if await self._query(service, "/users/" + quote(user_id, safe="")):
                async with self.db.pool.connection() as conn:
                    if await accounts.user_exists(conn, user_id):
                        return True
        return False

    async def ensure_user(self, user_id: str) -> bool:
        """Whether the user exists, asking the services whose namespace holds a missing
        local one. Users in no namespace are not looked at (True: callers check them
        as they always did), so this costs nothing outside bridges' namespaces."""
        if not self.registry.services_for_user_query(user_id):
            return True
        async with self.db.pool.connection() as conn:
            if await accounts.user_exists(conn, user_id):
                return True
        return await self.query_user(user_id)

    async def check_invitee(self, user_id: str) -> None:
        """404 for a local user in a service's namespace that neither exists nor is
        created when the service is asked (an invite to it would go nowhere)."""
        if not await self.ensure_user(user_id):
            raise ServiceError(404, "M_NOT_FOUND", f"Unknown user {user_id}")

    async def ping(self, service: AppService, transaction_id: str | None) -> int:
        """POST /_matrix/app/v1/ping; the round trip in ms, or the spec's error."""
        if not service.url:
            raise ServiceError(
                400, "M_URL_NOT_SET", "Application service doesn't have a URL configured"
            )
        body = {} if transaction_id is None else {"transaction_id": transaction_id}
        started = time.monotonic()
        try:
            async with self._http().post(
                _app_url(service, "/ping"),
                data=orjson.dumps(body),
                headers=self._headers(service),
                timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S),
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES)
                status = resp.status
        except TimeoutError:
            raise ServiceError(
                504, "M_CONNECTION_TIMEOUT", "Timed out waiting for the application service"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ServiceError(
                502,
                "M_CONNECTION_FAILED",
                f"Cannot reach the application service: {exc or type(exc).__name__}",
            ) from None
        duration_ms = int((time.monotonic() - started) * 1000)
        if not 200 <= status < 300:
            raise BadStatus(status, raw.decode("utf-8", "replace"))
        return duration_ms
