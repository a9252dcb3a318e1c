"""Backfill: history of a room joined over federation from before we joined it.

When /messages pages backwards past the earliest event we hold, we ask a server in
the room for the events before it (`GET /backfill`, which answers only with what our
server may see by history visibility). Each event is checked like any PDU, authorised
against its own auth events and against the state before it (bridged with /state_ids
where its prev events are missing), and placed in the timeline with a negative
stream ordering: it sorts by depth in /messages and never reaches an incremental
sync, forward extremities or current state. Events we held as outliers (the state
and auth chain learnt on joining) are placed the same way. Clients then see the
events through the usual history visibility checks.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from federation.auth_rules import AuthError, check_auth
from federation.events import Event
from federation.identifiers import create_event_id_for_room, server_name_of
from federation.room_versions import RoomVersion, get_room_version
from homeserver.services.events import event_record, load_events
from homeserver.services.federation_checks import auth_against_own, check_many
from homeserver.services.federation_client import FederationError, quote_segment
from homeserver.services.federation_state import (
    StateSet,
    auth_state_from,
    group_after,
    persist_outliers,
    resolve_sets,
)
from homeserver.storage import backfill as backfill_store
from homeserver.storage import events as event_store
from homeserver.storage import room_servers, rooms

if TYPE_CHECKING:
    from homeserver.services.homeserver import Homeserver

log = logging.getLogger(__name__)

BACKFILL_LIMIT = 100  # events asked for per request
MAX_EXTREMITIES = 5  # prev events named in one request
REMEMBERED_ROOMS = 1000  # rooms whose fruitless extremities we remember


class Backfiller:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        # Per room, the extremities a backfill last yielded nothing from: not asked again.
        self._fruitless: OrderedDict[str, frozenset[str]] = OrderedDict()

    async def backfill(self, room_id: str) -> bool:
        """Fetch history from before the earliest events we hold of `room_id`; whether
        any event joined the timeline."""
        hs = self.hs
        async with hs.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
            if room is None or room.current_state_group is None:
                return False
            if await backfill_store.holds_room_start(conn, room_id):
                return False
            extremities = await backfill_store.backward_extremities(conn, room_id, MAX_EXTREMITIES)
            servers = await room_servers.servers_in_room(conn, room_id)
        tried = frozenset(extremities)
        if not extremities or self._fruitless.get(room_id) == tried:
            return False
        room_version = get_room_version(room.room_version)
        home = server_name_of(room_id, "!")
        for server in sorted(servers - {hs.server_name}, key=lambda s: (s != home, s)):
            try:
                answer = await hs.federation_client.get_json(
                    server,
                    f"/_matrix/federation/v1/backfill/{quote_segment(room_id)}",
                    {"v": sorted(extremities), "limit": str(BACKFILL_LIMIT)},
                )
            except FederationError as exc:
                log.info("backfill of %s from %s failed: %s", room_id, server, exc)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list):
                continue
            events = await check_many(hs, pdus[:BACKFILL_LIMIT], room_version, room_id)
            if await self._place_all(server, room_version, room_id, events.values()):
                self._fruitless.pop(room_id, None)
                return True
        self._fruitless[room_id] = tried
        self._fruitless.move_to_end(room_id)
        if len(self._fruitless) > REMEMBERED_ROOMS:
            self._fruitless.popitem(last=False)
        return False

    async def _place_all(
        self, origin: str, room_version: RoomVersion, room_id: str, events: Iterable[Event]
    ) -> int:
        """Place a batch oldest first, so each event finds the state after its prev
        events; how many joined the timeline."""
        placed = 0
        async with self.hs.inbound.room_lock(room_id):
            for event in sorted(events, key=lambda e: (e.depth, e.event_id)):
                try:
                    placed += await self._place(origin, room_version, event)
                except Exception:  # hostile or broken input: skip it, keep the rest
                    log.exception("backfilled %s from %s failed", event.event_id, origin)
        return placed

    async def _place(self, origin: str, room_version: RoomVersion, event: Event) -> int:
        """Check and place one backfilled event: 1 when it joined the timeline, else 0
        (held already, or rejected: then kept as an outlier that is never shown)."""
        hs = self.hs
        wanted = [*event.auth_event_ids]
        create_id = create_event_id_for_room(event.room_id)
        if room_version.room_id_from_create_event and create_id:
            wanted.append(create_id)
        async with hs.db.pool.connection() as conn:
            row = (await event_store.get_events(conn, [event.event_id])).get(event.event_id)
            if row is not None and (row.state_group is not None or row.rejected_reason):
                return 0
            known = await load_events(conn, hs.event_cache, wanted)
            rows = await event_store.get_events(conn, wanted)
        rejected = {eid for eid, r in rows.items() if r.rejected_reason is not None}
        if any(a not in known for a in event.auth_event_ids):
            fetched = await hs.inbound.fetch_auth_chain(origin, room_version, event)
            if fetched is None:
                return 0
            known.update(fetched)
        reason = auth_against_own(event, {}, known, rejected)
        if reason is not None:
            return await self._reject(event, reason)
        sets: list[StateSet] = [{}]  # the create event: nothing before it
        if event.prev_event_ids:
            found = await hs.inbound.states_before(origin, room_version, event)
            if found is None:
                return 0
            sets = found
        async with hs.db.pool.connection() as conn, conn.transaction():
            before = await resolve_sets(conn, hs.event_cache, room_version, sets)
            try:
                check_auth(event, await auth_state_from(conn, hs.event_cache, event, before))
            except AuthError as exc:
                reason = exc.reason
            else:
                group = await group_after(conn, event, before)
                await backfill_store.place(
                    conn, event_record(event), group, outlier=row is not None
                )
        if reason is not None:
            return await self._reject(event, reason)
        hs.event_cache.put(event)
        return 1

    async def _reject(self, event: Event, reason: str) -> int:
        log.info("backfilled %s rejected: %s", event.event_id, reason)
        async with self.hs.db.pool.connection() as conn:
            await persist_outliers(conn, self.hs.event_cache, [event], {event.event_id: reason})
        return 0
