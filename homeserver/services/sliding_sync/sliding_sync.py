"""`POST .../org.matrix.simplified_msc3575/sync`: windows over the user's room list.

Per list, one query filters, orders by bump stamp and counts the user's rooms in
the database and returns only the rooms up to the list's furthest range, or brings
the windows read before up to date (`reading.py`); only those rooms (and the
subscriptions) are read, in batches: the cost follows the window, not the size of
the account.

The connection's state lives in the database (`sliding_sync_positions`), so any
process serving the database answers any `pos`, before and after a restart. Each
position records the stream token it was computed at and, per room, what the
connection then had of it; a `pos` unknown (never issued, superseded, expired)
answers M_UNKNOWN_POS and the client starts the connection again. A long-poll's
answer goes out before its position is stored (`_commit_after`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.notifier import Notifier
from homeserver.services.push.notifications import NotificationService
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.rooms.writer import RoomWriter
from homeserver.services.sliding_sync.extensions import Extensions, Scope
from homeserver.services.sliding_sync.lists import (
    ListContext,
    Window,
    room_configs,
)
from homeserver.services.sliding_sync.reading import ListReader, Lists, memberships
from homeserver.services.sliding_sync.request import SlidingSyncRequest
from homeserver.services.sliding_sync.rooms import Rendering, RoomRenderer, Target
from homeserver.services.sync.request import MAX_TIMEOUT_MS
from homeserver.services.sync.sync import MAX_SETTLE_S, SyncService
from homeserver.services.sync.tokens import InvalidToken, SyncToken
from homeserver.storage.accounts.account_data import IGNORED_USER_LIST
from homeserver.storage.core.pool import Connection, Database, roll_back
from homeserver.storage.sliding_sync import connections
from homeserver.storage.sliding_sync import rooms as store

log = logging.getLogger(__name__)

DIRECT = "m.direct"
ACCOUNT_CACHE_SIZE = 50_000
ROOM_SETS_CACHE_IDS = 200_000
# First answers' windows kept for the users' next ones (`FirstWindows`: 2 to 3 KiB
# each, for lists of 20 rooms).
FIRST_WINDOWS_CACHE = 5_000
# A connection unused for this long is forgotten (Synapse's expiry).
CONNECTION_EXPIRY_MS = 7 * 24 * 3600 * 1000


class _Turn:
    """A pooled connection for one turn of a long-poll, given back at the end of the
    turn (its transaction, if one is open, rolled back on an error), unless a task
    keeps it (`keep`) and gives it back itself (`release`)."""

    __slots__ = ("_kept", "_lease", "conn")

    def __init__(self, db: Database) -> None:
        self._lease = db.pool.connection()
        self._kept = False

    async def __aenter__(self) -> _Turn:
        self.conn = await self._lease.__aenter__()
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            await roll_back(self.conn)
        if not self._kept:
            await self._lease.__aexit__(kind, exc, tb)

    def keep(self) -> Connection:
        self._kept = True
        return self.conn

    async def release(self) -> None:
        await self._lease.__aexit__(None, None, None)


def unknown_pos() -> ServiceError:
    return ServiceError(400, "M_UNKNOWN_POS", "Unknown position")


@dataclass(slots=True)
class _Answer:
    body: JsonDict
    news: bool
    state: JsonDict
    now: SyncToken
    rendering: Rendering
    # Unread counts read with the lists (`_lists`), per room counted.
    unread: Mapping[str, JsonDict]
    # The new position, when saved in the state's round trip (`_compute`).
    saved: connections.SavedPosition | None = None
    # The new position's id, when taken ahead (`ListReader.read`): the answer can go
    # before it is stored, which its transaction, still open, does (`_commit_after`).
    reserved: int | None = None


class SlidingSyncService:
    def __init__(
        self,
        db: Database,
        event_cache: EventCache,
        notifier: Notifier,
        *,
        sync: SyncService,
        notifications: NotificationService,
        extensions: Extensions,
    ) -> None:
        self.db = db
        self.event_cache = event_cache
        self.notifier = notifier
        self.sync_service = sync
        self.notifications = notifications
        self.extensions = extensions
        # Per user: (the digest of their memberships, the rooms they are in), of at
        # most ROOM_SETS_CACHE_IDS rooms in all, the least recently used dropped first.
        self._room_sets: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()
        self._room_set_ids = 0
        self.lists = ListReader(notifications, FIRST_WINDOWS_CACHE)
        # Positions being stored after their answer went out (`_commit_after`).
        self._commits: set[asyncio.Task[None]] = set()
        # Per user: (account data position, DM rooms, ignored users).
        self._account_cache: OrderedDict[str, tuple[int, frozenset[str], frozenset[str]]] = (
            OrderedDict()
        )

    async def sync(self, requester: Requester, request: SlidingSyncRequest) -> JsonDict:
        user_id = requester.user_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(request.timeout_ms, MAX_TIMEOUT_MS) / 1000
        position: connections.Position | None = None
        since: SyncToken | None = None
        settle = True
        while True:
            async with _Turn(self.db) as turn:
                conn = turn.conn
                first, settle = settle, False
                if first:
                    position = await self._position(conn, requester, request)
                    since = None if position is None else _token(position.token)
                remaining = deadline - loop.time()
                idle, digest = self._idle(position, request, since, first and remaining > 0)
                if idle:
                    # The answer would be empty: straight to waiting.
                    rooms = await self._rooms(conn, user_id, digest)
                    moved = self._now(since) != since
                    # Something moved meanwhile: computed as a first answer (the
                    # client's own writes awaited).
                    settle = moved
                else:
                    answer = await self._compute(conn, requester, request, position, since, first)
                    if since is None or answer.news or remaining <= 0:
                        pos = await self._finish(conn, requester, request, position, answer)
                        if answer.reserved is not None:
                            self._commit_after(turn, requester, request, position, answer)
                        break
                    if answer.reserved is not None:
                        await connections.abandon_position(conn)
                    rooms = await self._rooms(conn, user_id, memberships(answer.state))
                    moved = self._now(since) != answer.now
                    # Computed again once woken: not kept while the long-poll is held.
                    del answer
            # Neither is kept in the frame of a held long-poll.
            del turn, conn
            if not moved:
                # Nothing readable moved while we computed: sleep until something for
                # the user or any of their rooms is notified (no await before
                # registering).
                position = None if position is None else position.held()
                if not await self.notifier.wait(user_id, rooms, remaining):
                    # Timed out, or the server is draining (waits return at once):
                    # answer with what there is, rather than look again.
                    deadline = loop.time()
        answer.body["pos"] = str(pos)
        return answer.body

    def _commit_after(
        self,
        turn: _Turn,
        requester: Requester,
        request: SlidingSyncRequest,
        position: connections.Position | None,
        answer: _Answer,
    ) -> None:
        """Store the answer's position (unless sent already) and commit its transaction
        while the answer goes out, then give the turn's connection back. A request with
        the new `pos` meanwhile waits for it (`_position`)."""
        conn = turn.keep()
        save = None
        if answer.saved is None:
            save = functools.partial(
                _save, conn, requester, request, position, answer.now, answer.state, answer.reserved
            )

        async def commit() -> None:
            try:
                await connections.commit_position(conn, save)
            except Exception as exc:
                # The client finds its position unknown, and starts again.
                log.warning("storing a sliding sync position failed: %s", exc)
            finally:
                await turn.release()

        task = asyncio.create_task(commit(), name="sliding-sync-commit")
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def close(self) -> None:
        """Let the positions being stored be stored: their answers have gone out."""
        if self._commits:
            await asyncio.wait(self._commits)

    async def _rooms(self, conn: Connection, user_id: str, digest: str | None) -> frozenset[str]:
        """The user's rooms to wait on, shared with the user's other held long-polls;
        read again only when the digest of the user's memberships (current: just read,
        or nothing moved since it was) is not the one they were read after. A room
        forgotten since stays in until then: a wake for nothing, never one missed."""
        cached = self._room_sets.get(user_id)
        if digest is not None and cached is not None and cached[0] == digest:
            self._room_sets.move_to_end(user_id)
            return self.notifier.room_set(user_id, cached[1])
        rooms = await store.room_ids_of_user(conn, user_id)
        if digest is not None:
            self._remember_rooms(user_id, digest, rooms)
        return self.notifier.room_set(user_id, rooms)

    def _remember_rooms(self, user_id: str, digest: str, rooms: frozenset[str]) -> None:
        old = self._room_sets.pop(user_id, None)
        if old is not None:
            self._room_set_ids -= len(old[1])
        self._room_sets[user_id] = (digest, rooms)
        self._room_set_ids += len(rooms)
        while self._room_set_ids > ROOM_SETS_CACHE_IDS:
            _, (_, evicted) = self._room_sets.popitem(last=False)
            self._room_set_ids -= len(evicted)

    async def _finish(
        self,
        conn: Connection,
        requester: Requester,
        request: SlidingSyncRequest,
        position: connections.Position | None,
        answer: _Answer,
    ) -> int:
        """Read the unread counts of the rooms sent (those not read with the lists) and
        store the answer's state as the connection's new position, which rides the
        counts' last round trip (unless the state's round trip took it already); a
        position whose id was taken ahead is stored after the answer, unless a round
        trip is made anyway (`_commit_after`)."""
        saved = [] if answer.saved is None else [answer.saved]

        async def save() -> None:
            saved.append(
                await _save(
                    conn, requester, request, position, answer.now, answer.state, answer.reserved
                )
            )

        missing = [r for r in answer.rendering.counted if r not in answer.unread]
        counts = dict(answer.unread)
        if missing:
            counts.update(
                await self.notifications.unread(
                    conn,
                    requester.user_id,
                    missing,
                    False,
                    answer.now.events,
                    None if saved else save,
                )
            )
        elif not saved and answer.reserved is None:
            await save()
        answer.rendering.add_unread(counts)
        if answer.reserved is not None:
            answer.saved = next(iter(saved), None)
            return answer.reserved
        return await saved[0].id()

    def _idle(
        self,
        position: connections.Position | None,
        request: SlidingSyncRequest,
        since: SyncToken | None,
        may: bool,
    ) -> tuple[bool, str | None]:
        """Whether the client repeats the request that `pos` answered and nothing has
        moved since: then the answer would be empty, and is not computed; and the
        digest of the user's memberships the position was answered with."""
        if not may or position is None or since is None or self._now(since) != since:
            return False, None
        records = position.records()
        return records.get("q") == request.digest, memberships(records)

    def _now(self, since: SyncToken | None) -> SyncToken:
        """The positions readable now; never behind the client's (another process may
        have answered it a moment before this one caught up)."""
        now = self.sync_service.current_token()
        if since is None:
            return now
        typing = now.typing
        return now.max(since).with_(typing=typing)

    async def _position(
        self, conn: Connection, requester: Requester, request: SlidingSyncRequest
    ) -> connections.Position | None:
        if request.pos is None:
            return None
        if not request.pos.isdigit() or len(request.pos) > 18:
            raise unknown_pos()
        key = (conn, requester.user_id, requester.device_id, request.conn_id, int(request.pos))
        position = await connections.load_position(*key)
        if position is None:
            # It may be one still being stored, its answer gone out (`_commit_after`).
            position = await connections.load_position_in_flight(*key)
        if position is None or position.created_ts < now_ms() - CONNECTION_EXPIRY_MS:
            raise unknown_pos()
        return position

    async def _compute(
        self,
        conn: Connection,
        requester: Requester,
        request: SlidingSyncRequest,
        position: connections.Position | None,
        since: SyncToken | None,
        settle: bool,
    ) -> _Answer:
        user_id = requester.user_id
        had = {} if position is None else position.records()
        since_events = None if since is None else since.events
        ctx = await self._context(
            conn, user_id, request, self.sync_service.current_token().account_data
        )
        had_rooms: Mapping[str, Any] = had.get("rooms", {})
        found = await self.lists.read(
            conn, user_id, request, ctx, had, since_events, self._now(since).events
        )
        windows, by_id = found.windows, found.by_id
        wanted = [r for r in request.subscriptions if r not in by_id]
        if wanted:
            for room in await store.user_rooms(
                conn, user_id, wanted, since=since_events, ignored=sorted(ctx.ignored)
            ):
                by_id[room.room_id] = room
        if settle:
            # Read-your-writes: what the user just wrote in these rooms is read now.
            await self.notifier.settle(user_id, list(by_id), MAX_SETTLE_S)
        now = self._now(since)
        if now.events != found.at:
            # Counts read at another position than the answer's are read again.
            found.unread = {}
        subscribed = [room_id for room_id in request.subscriptions if room_id in by_id]
        configs = room_configs(request, windows, subscribed)
        targets = [Target(by_id[r], c, had_rooms.get(r)) for r, c in configs.items()]
        await self.lists.read_ahead(conn, user_id, targets, found, now.events)
        lists = {name: _list_state(w) for name, w in windows.items()}
        saved: list[connections.SavedPosition] = []

        async def save_early(records: Mapping[str, JsonDict]) -> None:
            """An answer that reads room state sends rooms, so it is kept: its position
            is saved in the state's round trip rather than one of its own at the end."""
            state = _state({**had_rooms, **records}, lists, request, found)
            saved.append(
                await _save(conn, requester, request, position, now, state, found.reserved)
            )

        renderer = RoomRenderer(
            conn,
            self.event_cache,
            self.sync_service.lazy,
            self.sync_service.rendered,
            user_id=user_id,
            device_id=requester.device_id,
            now=now,
            since_events=None if since is None else since.events,
            dm_rooms=ctx.dm_rooms,
            ignored=ctx.ignored,
        )
        rendering = await renderer.render(targets, found.read, save_early)
        scope = Scope(
            {name: w.room_ids for name, w in windows.items()},
            subscribed,
            frozenset(rendering.initial),
            rendering.timeline_ids,
        )
        extensions, ext_news = await self.extensions.compute(
            conn, requester, request.extensions, scope, since, now
        )
        body: JsonDict = {"pos": ""}
        if windows:
            body["lists"] = {name: {"count": w.count, "ops": w.ops} for name, w in windows.items()}
        body["rooms"] = rendering.rooms
        body["extensions"] = extensions
        state = _state({**had_rooms, **rendering.records}, lists, request, found)
        news = bool(rendering.rooms) or ext_news or lists != had.get("lists")
        return _Answer(
            body, news, state, now, rendering, found.unread, next(iter(saved), None), found.reserved
        )

    async def _context(
        self, conn: Connection, user_id: str, request: SlidingSyncRequest, position: int
    ) -> ListContext:
        dm_rooms, ignored = await self._account(conn, user_id, position)
        filters = [lst.filters for lst in request.lists.values()]
        children: dict[str, frozenset[str]] = {}
        for space in {s for f in filters for s in f.spaces or ()}:
            children[space] = frozenset(await store.space_children(conn, [space]))
        return ListContext(dm_rooms, children, ignored)

    async def _account(
        self, conn: Connection, user_id: str, position: int
    ) -> tuple[frozenset[str], frozenset[str]]:
        """The user's DM rooms (m.direct) and ignored users, read again only when the
        account data stream has moved since they were read."""
        cached = self._account_cache.get(user_id)
        if cached is not None and cached[0] == position:
            return cached[1], cached[2]
        found = await store.global_account_data(conn, user_id, (DIRECT, IGNORED_USER_LIST))
        direct = found.get(DIRECT) or {}
        dm_rooms = frozenset(
            room_id
            for room_ids in direct.values()
            if isinstance(room_ids, list)
            for room_id in room_ids
            if isinstance(room_id, str)
        )
        ignored_users = (found.get(IGNORED_USER_LIST) or {}).get("ignored_users")
        ignored = frozenset(ignored_users) if isinstance(ignored_users, dict) else frozenset()
        self._account_cache[user_id] = (position, dm_rooms, ignored)
        self._account_cache.move_to_end(user_id)
        if len(self._account_cache) > ACCOUNT_CACHE_SIZE:
            self._account_cache.popitem(last=False)
        return dm_rooms, ignored


def _state(rooms: JsonDict, lists: JsonDict, request: SlidingSyncRequest, found: Lists) -> JsonDict:
    """The connection's state after an answer: per room, what it was sent; per list,
    its count and windows; the request's digest; and, when read, the digest of the
    memberships the lists were read with."""
    state = {"rooms": rooms, "lists": lists, "q": request.digest}
    if found.digest is not None:
        state["d"] = found.digest
    return state


async def _save(
    conn: Connection,
    requester: Requester,
    request: SlidingSyncRequest,
    position: connections.Position | None,
    now: SyncToken,
    state: JsonDict,
    reserved: int | None = None,
) -> connections.SavedPosition:
    """Send the statement that stores the answer's state as the connection's new
    position (from `position`, the one the client came with, if any; with the id
    `reserved` for it, if one was)."""
    return await connections.save_position(
        conn,
        (requester.user_id, requester.device_id, request.conn_id),
        None if position is None else position.connection_id,
        None if position is None else position_id(request),
        str(now),
        state,
        now_ms(),
        reserved,
    )


def position_id(request: SlidingSyncRequest) -> int:
    assert request.pos is not None
    return int(request.pos)


def _token(text: str) -> SyncToken:
    try:
        return SyncToken.parse(text)
    except InvalidToken:
        raise unknown_pos() from None


def _list_state(found: Window) -> list[Any]:
    return [found.count, [op["room_ids"] for op in found.ops]]


async def record_room_facts(writers: list[RoomWriter]) -> None:
    """The event writer's in-transaction hook, once per group commit: keep the rooms'
    bump stamps, types and encryption current for the lists
    (storage/sliding_sync/rooms.py), with the transaction's last statement."""
    bumps = [
        (
            w.room_id,
            max(
                (p.stream_ordering for p in w.persisted if p.event.type in store.BUMP_TYPES),
                default=0,
            ),
        )
        for w in writers
    ]
    writers[0].last_writes.append(store.update_rooms(bumps))
