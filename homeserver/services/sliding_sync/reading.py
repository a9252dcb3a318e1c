"""Reading an answer's lists: each list's window and rooms, with the timelines and
unread counts of the rooms they likely hold in the same round trip, then those of the
rooms that round trip did not guess.

Windows read before for the same lists (the connection's, or for a first answer those
of the user's last first answer: `FirstWindows`) are brought up to date, reading only
the rooms with events since, when the digest of the user's memberships (read first)
is the one they were read with; otherwise each list is read whole.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from federation.types import JsonDict
from homeserver import metrics
from homeserver.services.accounts.filters import RoomEventFilter
from homeserver.services.push.notifications import NotificationService, QueuedUnread
from homeserver.services.sliding_sync.lists import (
    FirstWindows,
    FirstWindowsCache,
    ListContext,
    Start,
    Window,
    context_key,
    guess_timelines,
    known_windows,
    limit_of,
    list_query,
    updatable,
    window,
)
from homeserver.services.sliding_sync.request import ListRequest, SlidingSyncRequest
from homeserver.services.sliding_sync.rooms import Target
from homeserver.services.sync.rooms import timeline_limit
from homeserver.services.timeline.messages import sql_filter_for
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.sliding_sync import connections
from homeserver.storage.sliding_sync import rooms as store
from homeserver.storage.sliding_sync.rooms import Known, ListRead, UserRoom
from homeserver.storage.timeline.timeline import SqlFilter


@dataclass(slots=True)
class Lists:
    at: int  # the events position the timelines and counts were read at
    windows: dict[str, Window] = field(default_factory=dict)
    by_id: dict[str, UserRoom] = field(default_factory=dict)
    read: dict[int, dict[tuple[str, int, int], list[EventRow]]] = field(default_factory=dict)
    unread: dict[str, JsonDict] = field(default_factory=dict)
    # [digest of the user's listed memberships, `context_key`], read with the lists
    # when the connection can bring them up to date next time.
    digest: list[str] | None = None
    # The new position's id, taken in the lists' round trip when a connection's
    # position is answered (`reserve_position`).
    reserved: int | None = None


@dataclass(eq=False)
class _Riders:
    """What rides the first list's round trip: the unread counts of the rooms whose
    timelines are guessed, and (`reserve`) the new position's id."""

    notifications: NotificationService
    conn: Connection
    user_id: str
    counted: list[str]
    at: int
    reserve: bool
    queued: list[QueuedUnread] = field(default_factory=list)
    reservation: list[connections.ReservedPosition] = field(default_factory=list)

    async def send(self) -> None:
        if self.counted:
            self.queued.append(
                await self.notifications.queue_unread(
                    self.conn, self.user_id, self.counted, self.at
                )
            )
        if self.reserve:
            self.reservation.append(await connections.reserve_position(self.conn))

    async def read(self, out: Lists) -> None:
        counts = await self.queued[0].read() if self.queued else None
        if counts is not None:
            out.unread = {room_id: counts.get(room_id, {}) for room_id in self.counted}
        if self.reservation:
            out.reserved = await self.reservation[0].id()


class ListReader:
    def __init__(self, notifications: NotificationService, first_windows: int) -> None:
        self.notifications = notifications
        self._first_windows = FirstWindowsCache(first_windows)

    async def read(
        self,
        conn: Connection,
        user_id: str,
        request: SlidingSyncRequest,
        ctx: ListContext,
        had: Mapping[str, Any],
        since: int | None,
        at: int,
    ) -> Lists:
        """Each list's window and its rooms, as of the events position `at`, for an
        answer from the connection's position at `since` (None: a first answer, whose
        windows are kept for the user's next one)."""
        out = Lists(at)
        updating = all(map(updatable, request.lists.values()))
        context = context_key(request, ctx) if updating else ""
        start = self._start(user_id, request, had, since, context if updating else None)
        guesses = {name: start.guesses(name, at) for name in request.lists}
        counted = sorted({room_id for guess in guesses.values() for room_id, _, _ in guess})
        riders = _Riders(self.notifications, conn, user_id, counted, at, since is not None)
        pending = [riders.send] if counted or since is not None else []
        trusted = True
        for name, lst in request.lists.items():
            ask = functools.partial(
                store.list_rooms,
                conn,
                user_id,
                list_query(lst.filters, ctx),
                limit_of(lst),
                since=since,
                ignored=sorted(ctx.ignored),
            )
            first = out.digest is None
            asked = start.known.get(name) if trusted else None
            read = await ask(
                known=asked,
                digest=updating and first,
                guess=guesses[name],
                guess_limit=timeline_limit(RoomEventFilter(limit=lst.config.timeline_limit)) + 1,
                guess_filter=sql_filter(lst.config.timeline_limit),
                then=pending.pop() if pending else None,
            )
            if first and read.digest is not None:
                out.digest = [read.digest, context]
                trusted = read.digest == start.digest
            if asked is not None and not (trusted and read.current):
                # What was read before no longer holds: the list is read whole.
                read = (await ask())._replace(guessed=read.guessed)
                asked = None
            metrics.SLIDING_SYNC_LISTS.labels("whole" if asked is None else "updated").inc()
            _add(out, name, lst, read)
        await riders.read(out)
        if since is None and out.digest is not None:
            self._first_windows.put(
                user_id, FirstWindows.of(context, out.digest[0], at, out.windows, out.by_id)
            )
        return out

    def _start(
        self,
        user_id: str,
        request: SlidingSyncRequest,
        had: Mapping[str, Any],
        since: int | None,
        context: str | None,
    ) -> Start:
        """What the lists start from: the windows the connection has (read at `since`)
        or, for a first answer, those of the user's last first answer of the same lists
        (`context`, when the lists can be brought up to date at all)."""
        if since is None:
            earlier = None if context is None else self._first_windows.get(user_id, context)
            if earlier is None:
                return Start()
            return Start(earlier.known, earlier.digest, earlier.guesses)
        known: dict[str, Known] = (
            {} if context is None else known_windows(request, had, context, since)
        )
        return Start(known, memberships(had), functools.partial(guess_timelines, had))

    async def read_ahead(
        self, conn: Connection, user_id: str, targets: list[Target], found: Lists, now: int
    ) -> None:
        """The timelines of the rooms the lists' round trip did not guess (a first
        answer's, a room entering a window, subscriptions), with the unread counts of
        the rooms not counted there, in one round trip."""
        missing: dict[int, list[tuple[str, int, int]]] = {}
        for t in targets:
            limit = t.config.timeline_limit
            if not t.stripped and (w := t.window(now)) not in found.read.get(limit, {}):
                missing.setdefault(limit, []).append(w)
        if not missing:
            return
        counted = [
            t.room.room_id for t in targets if not t.stripped and t.room.room_id not in found.unread
        ]
        queued: list[QueuedUnread] = []

        async def count() -> None:
            queued.append(await self.notifications.queue_unread(conn, user_id, counted, now))

        reads = [
            (windows, timeline_limit(RoomEventFilter(limit=limit)) + 1, sql_filter(limit))
            for limit, windows in missing.items()
        ]
        read = await store.timelines(conn, reads, count if counted else None)
        for limit, rows in zip(missing, read, strict=True):
            found.read.setdefault(limit, {}).update(rows)
        counts = await queued[0].read() if queued else None
        if counts is not None:
            found.unread.update((room_id, counts.get(room_id, {})) for room_id in counted)


def _add(out: Lists, name: str, lst: ListRequest, read: ListRead) -> None:
    out.read.setdefault(lst.config.timeline_limit, {}).update(read.guessed)
    out.windows[name] = window(read.total, read.rooms, lst)
    out.by_id.update((room.room_id, room) for room in read.rooms)


def sql_filter(limit: int) -> SqlFilter | None:
    """The SQL filter of a timeline of `limit` events (`recent_events`)."""
    return sql_filter_for(RoomEventFilter(limit=limit))


def memberships(state: Mapping[str, Any]) -> str | None:
    """The digest of the user's memberships in a connection's state, if it has one."""
    digest = state.get("d")
    if isinstance(digest, list) and digest and isinstance(digest[0], str):
        return digest[0]
    return None
