"""Wake-ups for long-polling syncs, within a process and across worker processes.

Writers call `notify(stream, position, rooms=..., users=...)` after their
transaction commits. A waiter is keyed by its user and the rooms it is in, so a
message wakes only the syncs of that room's members. A notification is delivered
only once the stream's safe position (see storage/core/streams.py) has reached it:
waking a sync that would then find nothing readable yet would cost a query and
still miss the event. Notifications also travel over PostgreSQL NOTIFY, so other
processes on the same database wake their own waiters; `broadcast`/`on` carry
in-memory state (typing) the same way.

When the database restarts, notifications from other processes are lost until the
LISTEN connection is back: then every waiter is woken to look again (a sync that finds
nothing new waits on). A notification that cannot be published or checked while the
database is away is not an error for the writer, whose data is committed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from homeserver import metrics
from homeserver.services.core.room_index import RoomIndex
from homeserver.storage.core import streams
from homeserver.storage.core.dedicated import DedicatedConnection, Listener
from homeserver.storage.core.pool import Connection, Database, is_unavailable

log = logging.getLogger(__name__)

CHANNEL = "homeserver_notify"
# Raised by a trigger on access_tokens (schema/versions/0002_accounts.py).
TOKENS_CHANNEL = "homeserver_tokens"
# How often `settle` looks at the safe positions again.
SETTLE_POLL_S = 0.02

Handler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(eq=False, slots=True)
class Waiter:
    """A held long-poll: kept small (a bare future, no event and its deque), as a
    server holds thousands."""

    user_id: str
    rooms: frozenset[str]
    woken: asyncio.Future[None]

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


@dataclass(frozen=True)
class _Pending:
    stream: str
    position: int
    rooms: tuple[str, ...]
    users: tuple[str, ...]
    everyone: bool = False


@dataclass(eq=False)
class Announcement:
    """A write announced from inside its transaction (`Notifier.announce_at_commit`)."""

    pending: _Pending
    fetch: Callable[[], Awaitable[dict[str, int]]]
    # the safe positions read with the commit, once `read`
    positions: dict[str, int] | None = None

    async def read(self) -> None:
        """Fetch what the commit's round trip brought back (the connection still held)."""
        self.positions = await self.fetch()


class Notifier:
    def __init__(self, db: Database) -> None:
        self.positions: dict[str, int] = {}
        self._by_user: dict[str, set[Waiter]] = {}
        # Per room, the users waiting on it (not the waiters: a user's many long-polls
        # cost one entry per room, not one each).
        self._rooms = RoomIndex()
        self._pending: list[_Pending] = []
        self._handlers: dict[str, Handler] = {}
        self._after_reconnect: list[Callable[[], None]] = []
        # One connection blocks in LISTEN; the other publishes and reads positions.
        self._listener = Listener(
            db, (CHANNEL, TOKENS_CHANNEL), self._on_notify, self._on_reconnect
        )
        self._conn = DedicatedConnection(db)
        self._refresh_lock = asyncio.Lock()
        # Reads of the safe positions begun so far: a caller that finds one begun after
        # it asked need not read again (under a stream of notifications from other
        # processes, the reads queued behind one in flight collapse into it).
        self._reads_begun = 0
        # Our notifications not yet published: the next read of the positions sends
        # them all first, in its own round trip (commits in many rooms at once share it).
        self._unpublished: list[str] = []
        # Tells our own notifications apart (per notifier: tests run two in one process).
        self._instance = uuid.uuid4().hex
        self._draining = False

    async def start(self) -> None:
        """Start listening to other processes, then read the current positions."""
        await self._listener.start()
        self.positions = await self._conn.run(streams.safe_positions)

    async def stop(self) -> None:
        await self._listener.stop()
        await self._conn.close()
        for waiters in self._by_user.values():
            for waiter in waiters:
                waiter.wake()
        self._rooms.close()

    def drain(self) -> None:
        """The process is stopping: wake every waiter now, and wait no more."""
        self._draining = True
        self.wake(users=list(self._by_user))

    @property
    def draining(self) -> bool:
        return self._draining

    async def _on_notify(self, channel: str, data: str) -> None:
        if channel == TOKENS_CHANNEL:
            handler = self._handlers.get("token_deleted")
            if handler is not None:
                await handler({"token_hash": data})
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if payload.get("from") != self._instance:
            await self._receive(payload)

    def after_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the LISTEN connection is back: notifications were lost."""
        self._after_reconnect.append(callback)

    async def _on_reconnect(self) -> None:
        """Back from a lost connection: catch up with the positions and wake everyone."""
        await self._refresh(force=True)
        for callback in self._after_reconnect:
            callback()
        self.wake(users=list(self._by_user))

    async def _receive(self, payload: dict[str, Any]) -> None:
        kind = payload.get("kind")
        if kind == "stream":
            self._pending.append(
                _Pending(
                    payload["stream"],
                    int(payload["position"]),
                    tuple(payload.get("rooms", ())),
                    tuple(payload.get("users", ())),
                    bool(payload.get("all")),
                )
            )
            await self._refresh()
        elif isinstance(kind, str) and kind in self._handlers:
            await self._handlers[kind](payload)

    async def _refresh(self, *, force: bool = False, publish: str | None = None) -> None:
        """Publish `publish` (with any others waiting), re-read safe positions and
        deliver every pending notification they cover. A read begun after this call's
        notification was queued has published it too."""
        asked = self._reads_begun
        if publish is not None:
            self._unpublished.append(publish)
        async with self._refresh_lock:
            idle = not (self._pending or force) or (self._reads_begun > asked and not force)
            if idle and not self._unpublished:
                return
            self._reads_begun += 1
            payloads, self._unpublished = self._unpublished, []
            read = await self._conn.run(
                lambda conn: streams.publish_and_read(conn, CHANNEL, payloads)
            )
            ready = self._advance(read)
        self._deliver(ready)

    def _advance(self, read: dict[str, int]) -> list[_Pending]:
        """Take in safe positions read (never moving one back: reads may finish out of
        order) and remove the pending notifications they cover; those are returned."""
        positions = self.positions
        self.positions = {s: max(p, positions.get(s, p)) for s, p in read.items()}
        ready = [p for p in self._pending if p.position <= self.positions.get(p.stream, 0)]
        if ready:
            self._pending = [
                p for p in self._pending if p.position > self.positions.get(p.stream, 0)
            ]
        return ready

    def _deliver(self, ready: list[_Pending]) -> None:
        for item in ready:
            if item.everyone:
                self.wake(users=list(self._by_user))
            else:
                self.wake(rooms=item.rooms, users=item.users)

    def wake(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        """Wake the waiters of these rooms and users now (in-memory streams use this)."""
        for room_id in rooms:
            for user_id in self._rooms.users_in(room_id):
                for waiter in self._by_user.get(user_id, ()):
                    if room_id in waiter.rooms:
                        waiter.wake()
        for user_id in users:
            for waiter in self._by_user.get(user_id, ()):
                waiter.wake()

    async def notify(
        self,
        stream: str,
        position: int,
        *,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> None:
        """Announce a committed write at `position` of `stream`."""
        pending = _Pending(stream, position, tuple(rooms), tuple(users))
        self._pending.append(pending)
        try:
            await self._refresh(publish=self._encode(self._payload(pending)))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Every listener, ours included, lost its connection too and wakes all its
            # waiters when it is back.
            log.info("database away: %s at %d is announced when it is back", stream, position)

    async def announce_at_commit(
        self,
        conn: Connection,
        stream: str,
        position: int,
        *,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
        finished: Mapping[str, Sequence[int]] | None = None,
        writes: Sequence[streams.Write] = (),
    ) -> Announcement:
        """Announce a write at `position` of `stream` from inside its transaction (in
        pipeline mode), without waiting: other processes hear of it when it commits, and
        the safe positions are read in the commit's round trip. `finished`: positions
        per stream the transaction used, finished in the same statement; `writes`, the
        transaction's last writes, made by it too. Once committed, `read` the
        announcement on the same connection, then hand it to `announced`."""
        pending = _Pending(stream, position, tuple(rooms), tuple(users))
        payload = self._encode(self._payload(pending))
        fetch = await streams.publish_and_read_at_commit(
            conn, CHANNEL, payload, finished or {}, writes
        )
        return Announcement(pending, fetch)

    async def announced(self, announcement: Announcement) -> None:
        """Wake the waiters of a committed announcement. The positions it read were
        read before the commit: when a write was in flight then, whatever is still
        pending is looked at again after it, as `notify` does, so that the last of
        concurrent writers to commit always delivers the others' notifications."""
        self._pending.append(announcement.pending)
        if announcement.positions is not None:
            self._deliver(self._advance(announcement.positions))
            if not self._pending:
                return
        try:
            await self._refresh(publish=None)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.info("database away: a write is announced when it is back")

    async def broadcast(self, kind: str, payload: dict[str, Any]) -> None:
        """Send in-memory state to the other processes' handlers for `kind`."""
        await self._publish({"kind": kind, **payload})

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    @staticmethod
    def _payload(pending: _Pending) -> dict[str, Any]:
        return {
            "kind": "stream",
            "stream": pending.stream,
            "position": pending.position,
            "rooms": pending.rooms,
            "users": pending.users,
        }

    def _encode(self, payload: dict[str, Any]) -> str:
        data = orjson.dumps({**payload, "from": self._instance})
        if len(data) > 7900:
            # NOTIFY payloads are limited to 8000 bytes: fall back to waking everyone.
            summary = {k: payload.get(k) for k in ("kind", "stream", "position")}
            data = orjson.dumps({**summary, "from": self._instance, "all": True})
        return data.decode()

    async def _publish(self, payload: dict[str, Any]) -> None:
        data = self._encode(payload)
        await self._conn.run(lambda conn: streams.publish(conn, CHANNEL, data))

    def room_set(self, user_id: str, rooms: frozenset[str]) -> frozenset[str]:
        """`rooms`, or an equal set a long-poll of this user waits (or waited) on: a
        caller that keeps the result instead while it waits holds no copy of its own
        (a user in 100 rooms: 17 KiB of ids and table per held long-poll), and
        registers it again in constant time."""
        return self._rooms.shared(user_id, rooms)

    async def wait(self, user_id: str, rooms: Iterable[str], seconds: float) -> bool:
        """Block until something for this user or these rooms is notified; False on timeout."""
        if self._draining:
            return False
        loop = asyncio.get_running_loop()
        waiter = Waiter(user_id, self._rooms.hold(user_id, frozenset(rooms)), loop.create_future())
        self._by_user.setdefault(user_id, set()).add(waiter)
        try:
            # A timeout scope, not wait_for: no task of its own per held long-poll.
            with metrics.LONG_POLLS.track_inprogress():
                async with asyncio.timeout(seconds):
                    await waiter.woken
            return True
        except TimeoutError:
            return False
        finally:
            self._discard(waiter)

    async def settle(self, user_id: str, rooms: Iterable[str], seconds: float) -> None:
        """Wait (at most `seconds`) until the writes announced for this user or these
        rooms are readable.

        A write is announced once committed, but readers stop below any position still
        in flight, so while another writer holds an earlier position a sync would not
        reach it. A client that wrote and then syncs must find its write there
        (read-your-writes): waiting for the write's own position gives it that. The
        safe positions are polled, as a writer that gives up announces nothing.
        """
        room_set = frozenset(rooms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._unreadable(user_id, room_set):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(SETTLE_POLL_S, remaining))
            await self._refresh()

    def _unreadable(self, user_id: str, rooms: frozenset[str]) -> bool:
        """Whether an announced write for this user or these rooms is not yet readable."""
        return any(
            p.position > self.positions.get(p.stream, 0)
            and (p.everyone or user_id in p.users or not rooms.isdisjoint(p.rooms))
            for p in self._pending
        )

    def _discard(self, waiter: Waiter) -> None:
        users = self._by_user.get(waiter.user_id)
        if users is not None:
            users.discard(waiter)
            if not users:
                del self._by_user[waiter.user_id]
        self._rooms.release(waiter.user_id, waiter.rooms)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._by_user.values())
