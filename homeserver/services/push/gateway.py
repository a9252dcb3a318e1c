"""Sending notifications to the push gateways of `http` pushers (the Push Gateway API's
`POST /_matrix/push/v1/notify`), so that phones hear of new messages.

The send path only names the users whose push actions a commit stored
(`notify_users`, after the commit, without waiting); a background task per pusher does
the rest. The pusher row is the queue's cursor: `last_stream_ordering` is the last push
action sent (or given up on), advanced in the database after each notification, so a
restart never sends one twice; `failing_since` and `retry_at` are its backoff. A task
holds a session-level advisory lock on its pusher (on a connection the sender keeps for
its locks; a dead process drops them), so worker processes on one database never send
the same notification twice. A new pusher starts at the newest event (storage sets its
cursor), so it gets only what comes after it. Only push actions below the events
stream's safe position are sent: one with a lower position may still be committing,
and the cursor must not pass it. A sweep (at start, then every few seconds) finds pushers
with unsent actions that no task is handling: after a restart, a crash of another
worker, or actions another worker committed.

Gateways are named by users, so the requests go through the same address filter as
federation: non-public addresses only inside `push.ip_range_whitelist`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

import aiohttp
import orjson
from yarl import URL

from federation.events import MEMBER, Event
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.remote.client import FilteringResolver, literal_address_refused
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, Database, DatabaseError, is_unavailable
from homeserver.storage.push import notifications as actions_store
from homeserver.storage.push import pushers as store
from homeserver.storage.rooms import state

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 600.0
# A notification more than a day late is no use to anyone: skip it, and stop retrying it.
GIVE_UP_MS = 24 * 3600 * 1000
# Short, so that another process takes over a dead one's pushers within seconds.
SWEEP_INTERVAL_S = 5.0
LOCKED_RETRY_MS = 1000
REQUEST_TIMEOUT_S = 30.0
MAX_CONCURRENT_REQUESTS = 50
BATCH = 20
MAX_ANSWER_BYTES = 64 * 1024
NAME_KEY = ("m.room.name", "")
ALIAS_KEY = ("m.room.canonical_alias", "")
# Event types that ring: their notifications go out at high priority.
CALL_TYPES = frozenset({"m.call.invite"})


class _Answer(Enum):
    DELIVERED = "delivered"  # or refused for good (4xx): either way, move on
    REJECTED = "rejected"  # the gateway no longer knows this pushkey
    RETRY = "retry"


def tweaks_of(actions: Sequence[Any]) -> dict[str, Any]:
    """The `set_tweak` actions as a map (a tweak without a value means true)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get("value", True)
    return tweaks


def notification_body(
    event: Event,
    user_id: str,
    pending: actions_store.PendingAction,
    pusher_key: store.PusherKey,
    pusher: store.DeliveryState,
    unread: int,
    *,
    sender_name: str | None,
    room_name: str | None,
    room_alias: str | None,
) -> dict[str, Any]:
    """The `notification` of the Push Gateway API for one event and one device; with
    `data.format` "event_id_only" only the ids, counts and device (the gateway fetches
    the rest itself, so that event content never passes through it)."""
    is_invite = event.type == MEMBER and event.membership == "invite"
    high = pending.highlight or is_invite or event.type in CALL_TYPES
    device = {
        "app_id": pusher_key.app_id,
        "pushkey": pusher_key.pushkey,
        "pushkey_ts": pusher.created_ts // 1000,
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
        "tweaks": tweaks_of(pending.actions),
    }
    counts = {"unread": unread} if unread else {}
    body: dict[str, Any] = {
        "event_id": pending.event_id,
        "room_id": pending.room_id,
        "prio": "high" if high else "low",
        "counts": counts,
        "devices": [device],
    }
    if pusher.data.get("format") == "event_id_only":
        return body
    body["type"] = event.type
    body["sender"] = event.sender
    body["user_is_target"] = event.type == MEMBER and event.state_key == user_id
    if event.content:
        body["content"] = dict(event.content)
    if sender_name:
        body["sender_display_name"] = sender_name
    if room_name:
        body["room_name"] = room_name
    if room_alias:
        body["room_alias"] = room_alias
    return body


class PushGateway:
    """Pushes to the users' push gateways: `start()`, then `notify_users` after commits;
    `close()` at exit."""

    def __init__(
        self,
        db: Database,
        cache: EventCache,
        *,
        allowed_ranges: Sequence[str] = (),
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.db = db
        self.cache = cache
        self._allowed = [ipaddress.ip_network(r, strict=False) for r in allowed_ranges]
        self.min_backoff_ms = int(min_backoff_s * 1000)
        self.max_backoff_ms = int(max_backoff_s * 1000)
        self.sweep_interval_s = sweep_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._dirty_users: set[str] = set()
        self._dirty_rooms: set[str] = set()
        # Users whose actions lay beyond the safe position: looked at again on each wake.
        self._held_users: set[str] = set()
        # Answers of the lookups of pushers to wake made in the commits' transactions
        self._found: list[Callable[[], Awaitable[list[store.PusherKey]]]] = []
        self._wakeup = asyncio.Event()
        self._workers: DeliveryWorkers[store.PusherKey] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda key: f"push {key.pushkey[:16]}",
            failure_retry_ms=self.max_backoff_ms,
            locked_retry_ms=LOCKED_RETRY_MS,
            name="push",
        )
        self._background: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._closing = False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=200, ttl_dns_cache=300, resolver=FilteringResolver(self._allowed)
            ),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            headers={"User-Agent": "homeserver"},
        )
        self._background = [
            asyncio.create_task(self._dispatch_forever(), name="push dispatch"),
            asyncio.create_task(self._sweep_forever(), name="push sweep"),
        ]

    async def close(self) -> None:
        """Stop sending; what is unsent stays behind the pushers' cursors for next time."""
        self._closing = True
        await cancel_and_wait(self._background)
        await self._workers.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def notify_users(
        self,
        user_ids: Iterable[str],
        room_ids: Iterable[str] = (),
        pushers: Callable[[], Awaitable[list[store.PusherKey]]] | None = None,
    ) -> None:
        """These users, and the joined members of these rooms (a room row's), just got
        push actions (committed): send them. Never waits. `pushers`: their pushers,
        already asked in the transaction (reads the answer)."""
        if self._closing:
            return
        if pushers is not None:
            self._found.append(pushers)
            self._wakeup.set()
            return
        before = len(self._dirty_users) + len(self._dirty_rooms)
        self._dirty_users.update(user_ids)
        self._dirty_rooms.update(room_ids)
        if len(self._dirty_users) + len(self._dirty_rooms) != before or self._held_users:
            self._wakeup.set()

    # ---- finding the pushers to run

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            users = self._dirty_users | self._held_users
            rooms = self._dirty_rooms
            found, self._found = self._found, []
            self._dirty_users = set()
            self._dirty_rooms = set()
            self._held_users = set()
            try:
                keys = [key for fetch in found for key in await fetch()]
                if users or rooms:
                    async with self.db.pool.connection() as conn:
                        keys += await store.pushers_to_wake(conn, sorted(users), sorted(rooms))
            except (DatabaseError, OSError) as exc:
                if not is_unavailable(exc):
                    log.exception("push: cannot look up pushers; the sweep will retry")
                continue
            for key in keys:
                self._workers.wake(key)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                async with self.db.pool.connection() as conn:
                    keys = await store.pushers_with_work(conn, now_ms())
                for key in keys:
                    self._workers.wake(key)
            except (DatabaseError, OSError) as exc:
                # While the database is away the pool logs it, once, not every sweep.
                if not is_unavailable(exc):
                    log.exception("push: sweep failed")
            await asyncio.sleep(self.sweep_interval_s)

    async def _drain(self, key: store.PusherKey) -> int | None:
        """Send the pusher's pending notifications in order; the time to retry at when
        its gateway failed, else None."""
        while True:
            async with self.db.pool.connection() as conn:
                pusher = await store.delivery_state(conn, key)
                if pusher is None:
                    return None  # deleted meanwhile
                if pusher.retry_at is not None and pusher.retry_at > now_ms():
                    return pusher.retry_at
                safe = (await streams.safe_positions(conn))["events"]
                batch = await actions_store.pending_actions(
                    conn, key.user_id, pusher.last_stream_ordering, safe, BATCH
                )
                if not batch:
                    cursor = max(pusher.last_stream_ordering, safe)
                    if await actions_store.has_actions_after(conn, key.user_id, cursor):
                        self._held_users.add(key.user_id)
                    return None
                bodies = await self._bodies(conn, key, pusher, batch)
            for pending, body in zip(batch, bodies, strict=True):
                if body is None:
                    answer = _Answer.DELIVERED  # too old, or the event is gone: skip it
                else:
                    answer = await self._post(pusher.data["url"], body, key)
                if answer is _Answer.REJECTED:
                    log.info("push: gateway rejected a pushkey of %s; removing it", key.user_id)
                    async with self.db.pool.connection() as conn:
                        await store.delete_pusher(conn, key.user_id, key.app_id, key.pushkey)
                    return None
                now = now_ms()
                if answer is _Answer.RETRY:
                    since = pusher.failing_since if pusher.failing_since is not None else now
                    if now - since < GIVE_UP_MS:
                        interval = min(max(now - since, self.min_backoff_ms), self.max_backoff_ms)
                        async with self.db.pool.connection() as conn:
                            await store.record_failure(conn, key, since, now + interval)
                        return now + interval
                    log.warning("push: giving up on %s for %s", pending.event_id, key.user_id)
                async with self.db.pool.connection() as conn:
                    await store.advance(conn, key, pending.stream_ordering)
                pusher = store.DeliveryState(
                    pusher.data, pusher.created_ts, pending.stream_ordering, None, None
                )

    async def _bodies(
        self,
        conn: Connection,
        key: store.PusherKey,
        pusher: store.DeliveryState,
        batch: Sequence[actions_store.PendingAction],
    ) -> list[dict[str, Any] | None]:
        events = await load_events(conn, self.cache, [p.event_id for p in batch])
        unread = await actions_store.total_unread(conn, key.user_id)
        full = pusher.data.get("format") != "event_id_only"
        rooms: dict[str, tuple[str | None, str | None]] = {}
        out: list[dict[str, Any] | None] = []
        now = now_ms()
        for pending in batch:
            event = events.get(pending.event_id)
            if event is None or now - pending.origin_server_ts > GIVE_UP_MS:
                out.append(None)
                continue
            sender_name = room_name = room_alias = None
            if full:
                if pending.room_id not in rooms:
                    rooms[pending.room_id] = await self._room_names(conn, pending.room_id)
                room_name, room_alias = rooms[pending.room_id]
                sender_name = await actions_store.display_name(conn, pending.room_id, event.sender)
            out.append(
                notification_body(
                    event,
                    key.user_id,
                    pending,
                    key,
                    pusher,
                    unread,
                    sender_name=sender_name,
                    room_name=room_name,
                    room_alias=room_alias,
                )
            )
        return out

    async def _room_names(self, conn: Connection, room_id: str) -> tuple[str | None, str | None]:
        """The room's name and canonical alias, from its current state."""
        ids = await state.get_current_state(conn, room_id, {NAME_KEY, ALIAS_KEY})
        found = await load_events(conn, self.cache, ids.values())
        name_event = found.get(ids.get(NAME_KEY, ""))
        alias_event = found.get(ids.get(ALIAS_KEY, ""))
        name = name_event.content.get("name") if name_event is not None else None
        alias = alias_event.content.get("alias") if alias_event is not None else None
        return (
            name if isinstance(name, str) else None,
            alias if isinstance(alias, str) else None,
        )

    async def _post(self, url: str, notification: dict[str, Any], key: store.PusherKey) -> _Answer:
        """POST one notification; what its answer means for the pusher."""
        if self._session is None:
            raise RuntimeError("PushGateway.start() was not called")
        target = URL(url)
        host = target.host or ""
        if literal_address_refused(host, self._allowed):
            log.info("push: %s is an address push may not use", host)
            return _Answer.RETRY
        try:
            async with (
                self._slots,
                self._session.post(
                    target,
                    data=orjson.dumps({"notification": notification}),
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                ) as resp,
            ):
                raw = await resp.content.read(MAX_ANSWER_BYTES)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("push: cannot reach %s: %s", host, exc or type(exc).__name__)
            return _Answer.RETRY
        if status >= 500 or status == 429:
            log.info("push: %s answered %d; will retry", host, status)
            return _Answer.RETRY
        if status >= 300:
            log.info("push: %s refused a notification with %d; skipping it", host, status)
            return _Answer.DELIVERED
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _Answer.DELIVERED
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and key.pushkey in rejected:
            return _Answer.REJECTED
        return _Answer.DELIVERED
