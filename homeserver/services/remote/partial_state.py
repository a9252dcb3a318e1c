"""Rooms we joined with partial state (MSC3706, spec 1.6 "omit_members"): the resident
answered our join without the room's member events, so our users could send and read
at once. Here the full state is fetched in the background from the servers the resident
named, the events placed since the join are checked again against it (the ones it does
not allow are taken out of the timeline: rejected, or soft-failed), and the room's mark
is cleared. The mark is a row (`storage/remote/partial_state.py`), so a restart resumes
the fetch; in a cluster one process fetches each room, under an advisory lock per room,
and another takes the room up when that process dies.

While a room is partial, the auth rules may need a member event we do not hold yet: a
remote event whose sender's membership is missing from our state is checked against
its own auth events for those keys (`check_remote_auth`), as the full state will tell.
"""

from __future__ import annotations

import logging

from federation.auth_rules import AuthError, check_auth
from federation.events import Event
from federation.identifiers import domain_of
from federation.room_versions import RoomVersion, get_room_version
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.notifier import Notifier
from homeserver.services.remote.checks import authorise_batch, check_many, event_id_of
from homeserver.services.remote.client import FederationClient, FederationError, quote_segment
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.state import (
    StateBefore,
    StateSet,
    auth_state_from,
    group_after,
    persist_outliers,
    replace_current_state,
    resolve_sets,
)
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.writer import EventWriter, RoomWriter
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.remote import partial_state as store
from homeserver.storage.remote.partial_state import PartialRoom
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms, state
from homeserver.storage.rooms.state import StateMap

log = logging.getLogger(__name__)

STATE_TIMEOUT_S = 300.0  # a big room's whole state is one answer
RETRY_DELAYS_S = (1.0, 5.0, 15.0, 60.0)
# How soon a room whose fetching process died is taken up by another.
SWEEP_INTERVAL_S = 5.0


async def check_remote_auth(
    conn: Connection, cache: EventCache, event: Event, before: StateBefore
) -> None:
    """`check_auth` of a remote event against `before`; in a room with partial state,
    the keys `before` lacks are taken from the event's own auth events. Raises
    AuthError."""
    auth_state = await auth_state_from(conn, cache, event, before)
    try:
        check_auth(event, auth_state)
    except AuthError:
        if await store.get_partial(conn, event.room_id) is None:
            raise
        cited = await load_events(conn, cache, event.auth_event_ids)
        for auth in cited.values():
            if auth.is_state and auth.state_tuple not in auth_state:
                auth_state[auth.state_tuple] = auth
        check_auth(event, auth_state)


class PartialStateSync:
    """Fetches the full state of rooms joined with partial state: in a cluster, one
    process per room at a time (the delivery engine's advisory lock per room), and a
    sweep of the marked rooms lets another process take a room over when its owner
    dies."""

    def __init__(
        self,
        db: Database,
        events: EventWriter,
        cache: EventCache,
        client: FederationClient,
        keyring: KeyRing,
        room_locks: RoomLocks,
        notifier: Notifier,
        server_name: str,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.events = events
        self.cache = cache
        self.client = client
        self.keyring = keyring
        self.room_locks = room_locks
        self.server_name = server_name
        self._attempts: dict[str, int] = {}
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda room_id: f"full state of {room_id}",
            failure_retry_ms=int(RETRY_DELAYS_S[-1] * 1000),
            pending=self._pending,
            sweep_interval_s=SWEEP_INTERVAL_S,
            name="partial state",
        )

    async def start(self) -> None:
        """Resume the fetches a restart (or another process's death) interrupted, now
        and every few seconds."""
        self._workers.start()

    async def sweep(self) -> None:
        """Take up the marked rooms nobody fetches, now."""
        await self._workers.sweep()

    async def close(self) -> None:
        await self._workers.close()

    def begin(self, room_id: str) -> None:
        """Fetch the room's full state in the background (once per room at a time)."""
        self._workers.wake(room_id)

    async def is_partial(self, room_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            return await store.get_partial(conn, room_id) is not None

    async def _pending(self) -> list[tuple[str, int | None]]:
        async with self.db.pool.connection() as conn:
            return [(room.room_id, None) for room in await store.partial_rooms(conn)]

    async def _drain(self, room_id: str) -> int | None:
        """Under the room's lock: each server named in turn; when none gave the full
        state, the time to go round again at (backing off)."""
        async with self.db.pool.connection() as conn:
            room = await store.get_partial(conn, room_id)
            row = await rooms.get_room(conn, room_id)
        if room is None or row is None:
            self._attempts.pop(room_id, None)
            return None
        version = get_room_version(row.room_version)
        servers = [room.joined_via, *room.servers]
        for server in dict.fromkeys(s for s in servers if s != self.server_name):
            try:
                if await self._resync_from(server, room, version):
                    self._attempts.pop(room_id, None)
                    return None
            except FederationError as exc:
                log.info("full state of %s from %s failed: %s", room_id, server, exc)
            except Exception:
                log.exception("full state of %s from %s failed", room_id, server)
        attempt = self._attempts.get(room_id, 0)
        self._attempts[room_id] = attempt + 1
        delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
        return now_ms() + int(delay * 1000)

    async def _resync_from(self, server: str, room: PartialRoom, version: RoomVersion) -> bool:
        """Fetch the state at our join from `server` and take it in; whether it was
        complete enough to clear the mark."""
        room_id = room.room_id
        answer = await self.client.get_json(
            server,
            f"/_matrix/federation/v1/state/{quote_segment(room_id)}",
            {"event_id": room.join_event_id},
            time_limit=STATE_TIMEOUT_S,
        )
        if not isinstance(answer, dict):
            return False
        state_pdus = answer.get("pdus")
        chain_pdus = answer.get("auth_chain")
        if not isinstance(state_pdus, list) or not isinstance(chain_pdus, list):
            return False
        batch = await check_many(self.keyring, [*state_pdus, *chain_pdus], version, room_id)
        async with self.db.pool.connection() as conn:
            wanted = {a for e in batch.values() for a in e.auth_event_ids} - set(batch)
            known = await load_events(conn, self.cache, wanted)
            rows = await event_store.get_events(conn, wanted)
        known_rejected = {eid for eid, r in rows.items() if r.rejected_reason is not None}
        rejected = authorise_batch(batch, known, known_rejected)
        state_ids = [i for p in state_pdus if (i := event_id_of(p, version)) in batch and i]
        full = {
            batch[eid].state_tuple: eid
            for eid in sorted(state_ids, key=lambda i: (batch[i].depth, i))
            if eid not in rejected and batch[eid].is_state
        }
        if not any(k[0] == "m.room.create" for k in full):
            log.info("state of %s from %s has no create event", room_id, server)
            return False
        async with self.room_locks.room_lock(room_id):
            async with self.events.writer(room_id) as writer:
                current = await store.get_partial(writer.conn, room_id)
                if current is None or current.join_event_id != room.join_event_id:
                    return True
                # A position for the change: memberships learnt now get it, and a
                # sync that left the room out sends it from there as newly joined.
                [position] = await writer.allocator.allocate("events")
                writer.positions.append(position)
                await persist_outliers(writer.conn, self.cache, batch.values(), rejected)
                await self._take_in(writer, room, full)
                await store.clear_partial(writer.conn, room_id, room.join_event_id, position)
                device_lists = writer.device_list_positions
        await self.notifier.notify("events", position, rooms=[room_id])
        if device_lists:
            await self.notifier.notify("device_lists", max(device_lists), rooms=[room_id])
        log.info("room %s now has its full state (%d events)", room_id, len(full))
        return True

    async def _take_in(self, writer: RoomWriter, room: PartialRoom, full: StateMap) -> None:
        """Give our join and every event after it the state the full state implies,
        checking the remote ones again, then make the room's current state follow."""
        conn = writer.conn
        rows = await event_store.get_events(conn, [room.join_event_id])
        join_row = rows.get(room.join_event_id)
        join = (await load_events(conn, self.cache, [room.join_event_id])).get(room.join_event_id)
        if join_row is None or join_row.stream_ordering is None or join is None:
            return
        at_join = {**full, join.state_tuple: join.event_id}
        groups = {join.event_id: await state.create_group(conn, room.room_id, None, at_join, 0)}
        await store.set_state_group(conn, join.event_id, groups[join.event_id])
        latest = groups[join.event_id]
        later = await store.events_since(conn, room.room_id, join_row.stream_ordering)
        events = await load_events(conn, self.cache, [e.event_id for e in later])
        for item in later:
            event = events.get(item.event_id)
            if event is None:
                continue
            sets: list[StateSet] = [groups[p] for p in event.prev_event_ids if p in groups]
            before = await resolve_sets(conn, self.cache, writer.room_version, sets or [latest])
            accepted = await self._recheck(conn, event, before, latest)
            group = await group_after(conn, event, before, accepted=accepted)
            await store.set_state_group(conn, event.event_id, group)
            groups[event.event_id] = group
            if accepted:
                latest = group
        await self._follow_extremities(writer, groups, latest)

    async def _recheck(
        self, conn: Connection, event: Event, before: StateBefore, current: int
    ) -> bool:
        """Check a remote event placed while the state was partial against the full
        state before it (failing: rejected) and the room's state then (failing:
        soft-failed); whether it still changes the state."""
        if domain_of(event.sender) == self.server_name:
            return True
        try:
            check_auth(event, await auth_state_from(conn, self.cache, event, before))
        except AuthError as exc:
            log.info("rejecting %s now the state is full: %s", event.event_id, exc.reason)
            await store.mark_failed(
                conn, event.event_id, rejected_reason=exc.reason, soft_failed=False
            )
            return False
        then = StateBefore(current, None)
        try:
            check_auth(event, await auth_state_from(conn, self.cache, event, then))
        except AuthError as exc:
            log.info("soft-failing %s now the state is full: %s", event.event_id, exc.reason)
            await store.mark_failed(conn, event.event_id, rejected_reason=None, soft_failed=True)
            return False
        return True

    async def _follow_extremities(
        self, writer: RoomWriter, groups: dict[str, int], latest: int
    ) -> None:
        """Current state from the forward extremities' new groups (resolved when they
        fork); the latest group when none of them was placed after the join."""
        conn = writer.conn
        tips = [eid for eid, _ in writer.extremities]
        sets: list[StateSet] = [groups[t] for t in tips if t in groups] or [latest]
        resolved = await resolve_sets(conn, self.cache, writer.room_version, sets)
        if resolved.group is not None:
            new_state = await state.get_state(conn, resolved.group)
            await replace_current_state(writer, new_state, resolved.group)
            return
        assert resolved.full is not None
        group = await state.create_group(conn, writer.room_id, None, resolved.full, 0)
        await replace_current_state(writer, resolved.full, group)
