"""Taking in one room's PDUs of a transaction together: a server in a busy room sends
up to 50 at a time, and one commit per event under the room's lock caps the rate at
the commit rate.

The PDUs are put in DAG order (each after those of its prev and auth events in the
batch). The longest prefix whose auth events and prev events we hold (or that comes
earlier in the batch) is written in one transaction: each event still authorised
against its own auth events, against the state before it and against current state,
and stored accepted, rejected or soft-failed, exactly as one at a time (in a room
with partial state too: `check_remote_auth`). An event that
needs the network (a missing auth chain, a gap before it) goes through the one-event
path, and the batch goes on after it. If the batch's transaction fails, its events
are retried one at a time, so one bad event cannot cost the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from federation.auth_rules import AuthError
from federation.events import Event
from federation.identifiers import create_event_id_for_room
from homeserver.services.remote.checks import auth_against_own
from homeserver.services.remote.partial_state import check_remote_auth
from homeserver.services.remote.state import (
    StateBefore,
    persist_outliers,
    persist_remote,
    resolve_sets,
)
from homeserver.services.rooms.event_cache import EventCache, load_event
from homeserver.services.rooms.writer import EventWriter, RoomWriter
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import events as event_store

log = logging.getLogger(__name__)

OneEvent = Callable[[Event], Awaitable[str | None]]
"""The one-event path: why the event was refused or rejected, or None."""


def dag_order(events: Iterable[Event]) -> list[Event]:
    """The events so that each follows those of the batch it cites as prev or auth
    events, otherwise in the order given; of events with one id, the first stays."""
    batch: dict[str, Event] = {}
    for event in events:
        batch.setdefault(event.event_id, event)
    ordered: list[Event] = []
    placed: set[str] = set()
    for root in batch.values():
        stack: list[tuple[Event, bool]] = [(root, False)]
        while stack:
            event, expanded = stack.pop()
            if event.event_id in placed:
                continue
            if expanded:
                placed.add(event.event_id)
                ordered.append(event)
                continue
            stack.append((event, True))
            for cited in reversed([*event.prev_event_ids, *event.auth_event_ids]):
                dep = batch.get(cited)
                if dep is not None and cited not in placed:
                    stack.append((dep, False))
    return ordered


@dataclass
class Plan:
    """A prefix of the batch that needs nothing from the network, and what we hold of
    the events it cites."""

    events: list[Event]
    cited: dict[str, Event] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    groups: dict[str, int] = field(default_factory=dict)  # state group after each held event


def _auth_ids(event: Event) -> list[str]:
    """The events the auth rules read for `event` besides the state: its auth events,
    and in rooms whose id names it, the create event."""
    ids = list(event.auth_event_ids)
    create_id = create_event_id_for_room(event.room_id)
    if event.room_version.room_id_from_create_event and create_id:
        ids.append(create_id)
    return ids


class BatchIntake:
    def __init__(self, db: Database, events: EventWriter, cache: EventCache) -> None:
        self.db = db
        self.events = events
        self.cache = cache

    async def take(self, events: list[Event], one_by_one: OneEvent) -> dict[str, str | None]:
        """Store one room's checked events; per event id, why it was refused or
        rejected, or None. The caller holds the room's lock."""
        results: dict[str, str | None] = {}
        pending = dag_order(events)
        while pending:
            plan = await self._plan(pending)
            if not plan.events:
                first, pending = pending[0], pending[1:]
                results[first.event_id] = await one_by_one(first)
                continue
            try:
                done = await self._write(plan)
            except Exception:
                log.exception("a batch of %d events failed; one at a time", len(plan.events))
                done = {e.event_id: await one_by_one(e) for e in plan.events}
            results.update(done)
            pending = [e for e in pending if e.event_id not in done]
        return results

    async def _plan(self, pending: list[Event]) -> Plan:
        """The prefix of `pending` whose cited events we hold or the prefix brings."""
        wanted = {c for e in pending for c in [*_auth_ids(e), *e.prev_event_ids, e.event_id]}
        async with self.db.pool.connection() as conn:
            rows = await event_store.get_events(conn, wanted)
        plan = Plan([])
        for event_id, row in rows.items():
            if row.rejected_reason is not None:
                plan.rejected.add(event_id)
            if row.state_group is not None:
                plan.groups[event_id] = row.state_group
            plan.cited[event_id] = self.cache.get(event_id) or load_event(row)
        coming: set[str] = set()
        for event in pending:
            held = event.event_id in rows
            auth_ok = all(a in plan.cited or a in coming for a in _auth_ids(event))
            prevs_ok = all(p in plan.groups or p in coming for p in event.prev_event_ids)
            if not held and not (auth_ok and prevs_ok and event.prev_event_ids):
                break
            plan.events.append(event)
            coming.add(event.event_id)
        return plan

    async def _write(self, plan: Plan) -> dict[str, str | None]:
        """Write the plan's events in one transaction, in order; stops early (leaving
        the rest to plan again) at an event whose state before it is unknown."""
        done: dict[str, str | None] = {}
        room_id = plan.events[0].room_id
        async with self.events.writer(room_id) as writer:
            ids = [e.event_id for e in plan.events]
            rows = await event_store.get_events(writer.conn, ids)
            fresh = [e for e in plan.events if e.event_id not in rows]
            for event_id, row in rows.items():
                if row.state_group is not None:
                    plan.groups[event_id] = row.state_group
                if row.rejected_reason is not None:
                    plan.rejected.add(event_id)
            if fresh:
                await writer.reserve_positions(len(fresh))
            batch: dict[str, Event] = {}
            for event in plan.events:
                if event.event_id in rows:
                    done[event.event_id] = None
                    continue
                sets = [plan.groups.get(p) for p in event.prev_event_ids]
                if not sets or None in sets:
                    break
                groups = [g for g in sets if g is not None]
                done[event.event_id] = await self._one(writer, plan, batch, event, groups)
                batch[event.event_id] = event
        return done

    async def _one(
        self,
        writer: RoomWriter,
        plan: Plan,
        batch: Mapping[str, Event],
        event: Event,
        groups: list[int],
    ) -> str | None:
        """Authorise and store one event of the batch, as the one-event path does."""
        conn, cache = writer.conn, self.cache
        reason = auth_against_own(event, batch, plan.cited, plan.rejected)
        if reason is not None:
            await persist_outliers(conn, cache, [event], {event.event_id: reason})
            plan.rejected.add(event.event_id)
            return f"rejected: {reason}"
        before = await resolve_sets(conn, cache, event.room_version, list(groups))
        try:
            await check_remote_auth(conn, cache, event, before)
        except AuthError as exc:
            plan.groups[event.event_id] = await persist_remote(
                writer, event, before, rejected_reason=exc.reason
            )
            plan.rejected.add(event.event_id)
            return f"rejected: {exc.reason}"
        soft_failed = False
        if before.group is None or before.group != writer.state_group:
            current = StateBefore(writer.state_group, None)
            try:
                await check_remote_auth(conn, cache, event, current)
            except AuthError as exc:
                log.info("soft-failing %s: %s", event.event_id, exc.reason)
                soft_failed = True
        plan.groups[event.event_id] = await persist_remote(
            writer, event, before, soft_failed=soft_failed
        )
        return None
