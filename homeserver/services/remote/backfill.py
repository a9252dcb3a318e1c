"""Backfill: filling the holes in our copy of a room's timeline from other servers.

A hole is a timeline event whose prev events are not in our timeline: the event we
joined with (history from before our join), or an incoming event whose missing prev
events were bridged with the state at the gap instead of being fetched (see
services/remote/inbound.py). storage/remote/backfill.py keeps them as `backfill_gaps`. When a
/messages page reaches such an event, we ask servers in the room for the events before
it (`GET /backfill` with its missing prev events as `v`; the answer holds only what our
server may see by history visibility). Each event is checked like any PDU (signatures,
hash, auth against its own auth events and against the state before it, bridged with
/state_ids where its prev events are missing), and placed in the timeline with a
negative stream ordering: it sorts by depth in /messages, inside the hole, and never
reaches an incremental sync, forward extremities or current state. Redactions are
applied both ways: a backfilled redaction to a target we hold, and a redaction we hold
to a target that is backfilled, with the same checks as a live one.

Bounded: at most BACKFILL_LIMIT events per request, MAX_SERVERS servers per attempt,
and a page waits at most `page_wait` seconds (the fill goes on in the background, and
the next page picks it up). A gap nobody could fill is not asked for again for a while
(doubling from a minute to a day), so pages are not held up by it again and again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from federation.auth_rules import AuthError, check_auth
from federation.events import Event
from federation.identifiers import create_event_id_for_room, domain_of, server_name_of
from federation.room_versions import RoomVersion, get_room_version
from homeserver.services.remote.checks import auth_against_own, check_many
from homeserver.services.remote.client import FederationClient, FederationError, quote_segment
from homeserver.services.remote.inbound import FederationInbound
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.state import (
    StateSet,
    apply_redaction,
    auth_state_from,
    group_after,
    persist_outliers,
    resolve_sets,
)
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.writer import event_record
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import backfill as backfill_store
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms

log = logging.getLogger(__name__)

BACKFILL_LIMIT = 100  # events asked for per request
MAX_EXTREMITIES = 5  # prev events named in one request
MAX_SERVERS = 3  # servers asked per attempt at one gap
REQUEST_TIMEOUT = 10.0  # seconds for one server's /backfill answer
PAGE_WAIT = 10.0  # seconds one /messages page waits for backfill, in all

# Redactions we hold, by target: each with the state group after it.
HeldRedactions = dict[str, list[tuple[Event, int]]]


def ancestors(events: Mapping[str, Event], start: Iterable[str]) -> dict[str, Event]:
    """The events of a batch reachable from `start` along prev edges inside the batch:
    what a server answering /backfill for `start` should have sent. Anything else (a
    hostile server's events from elsewhere in the room) is not placed in the hole."""
    out: dict[str, Event] = {}
    frontier = [e for e in start if e in events]
    while frontier:
        event_id = frontier.pop()
        if event_id in out:
            continue
        event = out[event_id] = events[event_id]
        frontier.extend(p for p in event.prev_event_ids if p in events and p not in out)
    return out


class Backfiller:
    def __init__(
        self,
        db: Database,
        event_cache: EventCache,
        client: FederationClient,
        keyring: KeyRing,
        inbound: FederationInbound,
        room_locks: RoomLocks,
        server_name: str,
    ) -> None:
        self.db = db
        self.event_cache = event_cache
        self.client = client
        self.keyring = keyring
        self.inbound = inbound
        self.room_locks = room_locks
        self.server_name = server_name
        self.page_wait = PAGE_WAIT
        self.request_timeout = REQUEST_TIMEOUT
        # Fills under way, by (room, gap event): a page that finds one waits on it.
        self._running: dict[tuple[str, str], asyncio.Task[int]] = {}

    async def fill_gap(self, room_id: str, event_id: str, wait: float) -> int:
        """Backfill the hole before `event_id` (a timeline event whose prev events we
        lack), waiting at most `wait` seconds; how many events joined the timeline (0
        also when the fill is still under way: it carries on in the background)."""
        key = (room_id, event_id)
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(room_id, event_id))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                return await asyncio.shield(task)
        except TimeoutError:
            return 0

    async def _peers(self, room_id: str) -> list[str]:
        """The other servers in a room, the room's creator's first."""
        async with self.db.pool.connection() as conn:
            servers = await room_servers.servers_in_room(conn, room_id)
        home = server_name_of(room_id, "!")
        return sorted(servers - {self.server_name}, key=lambda s: (s != home, s))

    async def closest_remote(
        self, room_id: str, ts: int, *, forward: bool
    ) -> tuple[str, str, int] | None:
        """Another server's event closest to `ts` (server, event id, its timestamp): the
        first of the room's servers to answer federation `/timestamp_to_event`."""
        for server in (await self._peers(room_id))[:MAX_SERVERS]:
            try:
                answer = await self.client.get_json(
                    server,
                    f"/_matrix/federation/v1/timestamp_to_event/{quote_segment(room_id)}",
                    {"ts": str(ts), "dir": "f" if forward else "b"},
                    time_limit=self.request_timeout,
                )
            except FederationError as exc:
                log.info("timestamp_to_event in %s at %s failed: %s", room_id, server, exc)
                continue
            if not isinstance(answer, dict):
                continue
            event_id, at = answer.get("event_id"), answer.get("origin_server_ts")
            if isinstance(event_id, str) and event_id.startswith("$") and type(at) is int:
                return server, event_id, at
        return None

    async def fetch_event(self, origin: str, room_id: str, event_id: str) -> bool:
        """Fetch one event of a room from `origin` and place it in our timeline, with
        the state before it (asked of `origin` where our history does not reach it);
        whether it is placed."""
        async with self.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
            row = (await event_store.get_events(conn, [event_id])).get(event_id)
        if room is None:
            return False
        if row is not None and row.state_group is not None:
            return True
        try:
            answer = await self.client.get_json(
                origin,
                f"/_matrix/federation/v1/event/{quote_segment(event_id)}",
                time_limit=self.request_timeout,
            )
        except FederationError as exc:
            log.info("fetching %s from %s failed: %s", event_id, origin, exc)
            return False
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list) or not pdus:
            return False
        room_version = get_room_version(room.room_version)
        checked = await check_many(self.keyring, pdus[:1], room_version, room_id)
        if event_id not in checked:
            return False
        return await self._place_all(origin, room_version, room_id, [checked[event_id]]) == 1

    async def close(self) -> None:
        """Stop fills under way (at shutdown)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fill(self, room_id: str, event_id: str) -> int:
        try:
            return await self._fill_from_servers(room_id, event_id)
        except Exception:  # never let one gap break a page
            log.exception("backfill of %s before %s failed", room_id, event_id)
            return 0

    async def _fill_from_servers(self, room_id: str, event_id: str) -> int:
        async with self.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
            if room is None or room.current_state_group is None:
                return 0
            prevs = await backfill_store.due_gap_prevs(conn, event_id, MAX_EXTREMITIES)
            servers = await room_servers.servers_in_room(conn, room_id)
            gap_event = (await load_events(conn, self.event_cache, [event_id])).get(event_id)
        if not prevs:
            return 0
        room_version = get_room_version(room.room_version)
        # The server of the event at the gap had its prev events; then the room's
        # creator's, then the rest.
        first = domain_of(gap_event.sender) if gap_event is not None else None
        home = server_name_of(room_id, "!")
        candidates = sorted(servers - {self.server_name}, key=lambda s: (s != first, s != home, s))
        for server in candidates[:MAX_SERVERS]:
            try:
                answer = await self.client.get_json(
                    server,
                    f"/_matrix/federation/v1/backfill/{quote_segment(room_id)}",
                    {"v": prevs, "limit": str(BACKFILL_LIMIT)},
                    time_limit=self.request_timeout,
                )
            except FederationError as exc:
                log.info("backfill of %s from %s failed: %s", room_id, server, exc)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list):
                continue
            checked = await check_many(self.keyring, pdus[:BACKFILL_LIMIT], room_version, room_id)
            events = ancestors(checked, prevs)
            placed = await self._place_all(server, room_version, room_id, events.values())
            if placed:
                return placed
        async with self.db.pool.connection() as conn:
            await backfill_store.gap_failed(conn, event_id, prevs)
        return 0

    async def _place_all(
        self, origin: str, room_version: RoomVersion, room_id: str, events: Iterable[Event]
    ) -> int:
        """Place a batch oldest first, so each event finds the state after its prev
        events; how many joined the timeline."""
        batch = sorted(events, key=lambda e: (e.depth, e.event_id))
        placed = 0
        async with self.room_locks.room_lock(room_id):
            held = await self._redactions_of(room_id, [e.event_id for e in batch])
            for event in batch:
                try:
                    placed += await self._place(origin, room_version, event, held)
                except Exception:  # hostile or broken input: skip it, keep the rest
                    log.exception("backfilled %s from %s failed", event.event_id, origin)
        return placed

    async def _redactions_of(self, room_id: str, event_ids: list[str]) -> HeldRedactions:
        """The redactions in our timeline of any of these events, by target."""
        async with self.db.pool.connection() as conn:
            found = await backfill_store.redactions_targeting(conn, room_id, event_ids)
            loaded = await load_events(conn, self.event_cache, [r for r, _ in found])
        held: HeldRedactions = {}
        for redaction_id, group in found:
            redaction = loaded.get(redaction_id)
            if redaction is not None and redaction.redacts is not None:
                held.setdefault(redaction.redacts, []).append((redaction, group))
        return held

    async def _place(
        self,
        origin: str,
        room_version: RoomVersion,
        event: Event,
        held: HeldRedactions,
    ) -> int:
        """Check and place one backfilled event: 1 when it joined the timeline, else 0
        (held already, or rejected: then kept as an outlier that is never shown). A
        redaction is applied to its target, and redactions in `held` (by target) to
        the event, each with the checks of a live redaction."""
        wanted = [*event.auth_event_ids]
        create_id = create_event_id_for_room(event.room_id)
        if room_version.room_id_from_create_event and create_id:
            wanted.append(create_id)
        async with self.db.pool.connection() as conn:
            row = (await event_store.get_events(conn, [event.event_id])).get(event.event_id)
            if row is not None and (row.state_group is not None or row.rejected_reason):
                return 0
            known = await load_events(conn, self.event_cache, wanted)
            rows = await event_store.get_events(conn, wanted)
        rejected = {eid for eid, r in rows.items() if r.rejected_reason is not None}
        if any(a not in known for a in event.auth_event_ids):
            fetched = await self.inbound.fetch_auth_chain(origin, room_version, event)
            if fetched is None:
                return 0
            known.update(fetched)
        reason = auth_against_own(event, {}, known, rejected)
        if reason is not None:
            return await self._reject(event, reason)
        sets: list[StateSet] = [{}]  # the create event: nothing before it
        if event.prev_event_ids:
            found = await self.inbound.states_before(origin, room_version, event)
            if found is None:
                return 0
            sets = found
        async with self.db.pool.connection() as conn, conn.transaction():
            before = await resolve_sets(conn, self.event_cache, room_version, sets)
            try:
                check_auth(event, await auth_state_from(conn, self.event_cache, event, before))
            except AuthError as exc:
                reason = exc.reason
            else:
                group = await group_after(conn, event, before)
                await backfill_store.place(
                    conn, event_record(event), group, outlier=row is not None
                )
                await backfill_store.note_placed(
                    conn, event.room_id, event.event_id, event.prev_event_ids, in_timeline=True
                )
                if event.type == "m.room.redaction" and event.redacts is not None:
                    await apply_redaction(conn, self.event_cache, event, group)
                    held.setdefault(event.redacts, []).append((event, group))
                for redaction, at in held.get(event.event_id, []):
                    await apply_redaction(conn, self.event_cache, redaction, at)
        if reason is not None:
            return await self._reject(event, reason)
        self.event_cache.put(event)
        return 1

    async def _reject(self, event: Event, reason: str) -> int:
        log.info("backfilled %s rejected: %s", event.event_id, reason)
        async with self.db.pool.connection() as conn, conn.transaction():
            await persist_outliers(conn, self.event_cache, [event], {event.event_id: reason})
            await backfill_store.note_placed(
                conn, event.room_id, event.event_id, (), in_timeline=False
            )
        return 0
