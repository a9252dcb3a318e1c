"""Receiving PDUs and EDUs from other servers: `PUT /send/{txnId}` (spec: server-server
"Transactions", "Checks performed on receipt of a PDU").

Per PDU: format, signatures and content hash (a bad hash stores the redacted form);
the sender's server must have signed it, but the origin may relay it (a resident server
passes a joining server's join on to the room); auth against its own auth events
(fetching a missing auth chain from the origin); the state before it, from its prev
events (missing ones are asked for with /get_missing_events, and a gap left after that
is bridged with the state at the gap from /state_ids); auth against that state
(failing: stored rejected); auth against current state (failing: soft-failed). Events
of one room are processed in DAG order under a per-room lock, those needing nothing
from the network together in one commit (`inbound_batch.py`); rooms in parallel. A
transaction's answer is remembered for a while, so a retried one is not redone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from federation.auth_rules import AuthError
from federation.events import Event
from federation.identifiers import create_event_id_for_room
from federation.room_versions import RoomVersion, get_room_version
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.remote.checks import (
    PduRefused,
    auth_against_own,
    authorise_batch,
    check_many,
    check_one,
    event_id_of,
    keys_for,
)
from homeserver.services.remote.client import FederationClient, FederationError, quote_segment
from homeserver.services.remote.edus import InboundEdus
from homeserver.services.remote.inbound_batch import BatchIntake
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.partial_state import check_remote_auth
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.state import (
    StateBefore,
    StateSet,
    persist_outliers,
    persist_remote,
    resolve_sets,
)
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.server_acl import DENIED, ServerAclService
from homeserver.services.rooms.writer import EventWriter
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.remote import inbound as answers
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms

log = logging.getLogger(__name__)


MAX_PDUS = 50
MAX_EDUS = 100
MISSING_EVENTS_LIMIT = 10
MAX_GAP_EVENTS = 1000  # state and auth chain fetched to bridge one gap
MAX_AUTH_CHAIN = 1000
FETCH_CONCURRENCY = 10
REMEMBERED_TRANSACTIONS = 1000
# Answers are kept in the database this long (a server retries within minutes), and
# older ones deleted this often.
ANSWER_TTL_MS = 24 * 3600 * 1000
FORGET_INTERVAL_MS = 3600 * 1000


class FederationInbound:
    def __init__(
        self,
        db: Database,
        events: EventWriter,
        event_cache: EventCache,
        client: FederationClient,
        keyring: KeyRing,
        server_acl: ServerAclService,
        room_locks: RoomLocks,
        edus: InboundEdus,
    ) -> None:
        self.db = db
        self.events = events
        self.event_cache = event_cache
        self.client = client
        self.keyring = keyring
        self.server_acl = server_acl
        self.room_locks = room_locks
        self.edus = edus
        self.batches = BatchIntake(db, events, event_cache)
        self._answers: OrderedDict[tuple[str, str], JsonDict] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Task[JsonDict]] = {}
        self._forgotten_at = now_ms()

    # ---- transactions

    async def on_transaction(
        self, origin: str, txn_id: str, pdus: list[Any], edus: list[Any]
    ) -> JsonDict:
        key = (origin, txn_id)
        answer = self._answers.get(key)
        if answer is not None:
            return answer
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._answer(origin, txn_id, pdus, edus))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: a sender that hangs up must not abort events half processed.
        answer = await asyncio.shield(task)
        self._answers[key] = answer
        if len(self._answers) > REMEMBERED_TRANSACTIONS:
            self._answers.popitem(last=False)
        return answer

    async def _answer(self, origin: str, txn_id: str, pdus: list[Any], edus: list[Any]) -> JsonDict:
        """The answer another process gave, or process the transaction and record ours."""
        async with self.db.pool.connection() as conn:
            stored = await answers.get_answer(conn, origin, txn_id)
        if stored is not None:
            return stored
        answer = await self._process(origin, pdus, edus)
        now = now_ms()
        async with self.db.pool.connection() as conn:
            await answers.store_answer(conn, origin, txn_id, answer, now)
            if now - self._forgotten_at > FORGET_INTERVAL_MS:
                self._forgotten_at = now
                await answers.forget_answers(conn, now - ANSWER_TTL_MS)
        return answer

    async def _process(self, origin: str, pdus: list[Any], edus: list[Any]) -> JsonDict:
        by_room: dict[str, list[Any]] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if isinstance(room_id, str):
                by_room.setdefault(room_id, []).append(pdu)
        results: dict[str, JsonDict] = {}
        answers = await asyncio.gather(
            *(self._room_pdus(origin, room_id, items) for room_id, items in by_room.items())
        )
        for answer in answers:
            results.update(answer)
        await self._edus(origin, edus)
        return {"pdus": results}

    async def _edus(self, origin: str, edus: list[Any]) -> None:
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str):
                continue
            try:
                await self.edus.handle(origin, edu["edu_type"], edu.get("content"))
            except Exception:
                log.exception("EDU %s from %s failed", edu.get("edu_type"), origin)

    async def _room_pdus(self, origin: str, room_id: str, pdus: list[Any]) -> dict[str, JsonDict]:
        async with self.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
        out: dict[str, JsonDict] = {}
        if room is None or room.current_state_group is None:
            for pdu in pdus:
                event_id = event_id_of(pdu, get_room_version("11"))
                if event_id is not None:
                    out[event_id] = {"error": f"unknown room {room_id}"}
            return out
        room_version = get_room_version(room.room_version)
        if not await self.server_acl.allows(origin, room_id):
            ids = (event_id_of(pdu, room_version) for pdu in pdus)
            return {e: {"error": DENIED} for e in ids if e is not None}
        lookup = await keys_for(self.keyring, pdus, room_version)
        checked: list[Event] = []
        for pdu in pdus:
            event_id = event_id_of(pdu, room_version)
            if event_id is None:
                continue
            try:
                event = check_one(pdu, room_version, lookup)
                if event.room_id != room_id:
                    raise PduRefused("room_id does not match")
                checked.append(event)
            except PduRefused as exc:
                out[event_id] = {"error": str(exc)}

        async def one_by_one(event: Event) -> str | None:
            try:
                return await self.process_event(origin, room_version, event)
            except Exception:
                log.exception("PDU %s from %s failed", event.event_id, origin)
                return "internal error"

        async with self.room_locks.room_lock(room_id):
            results = await self.batches.take(checked, one_by_one)
        for event_id, error in results.items():
            out[event_id] = {} if error is None else {"error": error}
        return out

    # ---- one event

    async def process_event(
        self, origin: str, room_version: RoomVersion, event: Event, *, fill_gaps: bool = True
    ) -> str | None:
        """Store a checked remote event; why it was refused or rejected, or None.
        The caller holds the room's lock."""
        async with self.db.pool.connection() as conn:
            if await fed_store.known_event_ids(conn, [event.event_id]):
                return None
            wanted = [*event.auth_event_ids]
            create_id = create_event_id_for_room(event.room_id)
            if room_version.room_id_from_create_event and create_id:
                wanted.append(create_id)
            known = await load_events(conn, self.event_cache, wanted)
            rejected = {
                eid
                for eid, row in (await event_store.get_events(conn, wanted)).items()
                if row.rejected_reason is not None
            }
        if any(a not in known for a in event.auth_event_ids):
            fetched = await self._fetch_auth_chain(origin, room_version, event)
            if fetched is None:
                return "its auth events could not be fetched"
            known.update(fetched)
        reason = auth_against_own(event, {}, known, rejected)
        if reason is not None:
            async with self.db.pool.connection() as conn:
                await persist_outliers(conn, self.event_cache, [event], {event.event_id: reason})
            return f"rejected: {reason}"

        sets = await self._prev_states(origin, room_version, event, fill_gaps)
        if sets is None:
            return "the state before it could not be determined"
        async with self.events.writer(event.room_id) as writer:
            conn = writer.conn
            if await fed_store.known_event_ids(conn, [event.event_id]):
                return None
            before = await resolve_sets(conn, self.event_cache, room_version, sets)
            try:
                await check_remote_auth(conn, self.event_cache, event, before)
            except AuthError as exc:
                await persist_remote(writer, event, before, rejected_reason=exc.reason)
                return f"rejected: {exc.reason}"
            current = StateBefore(writer.state_group, None)
            try:
                await check_remote_auth(conn, self.event_cache, event, current)
                soft_failed = False
            except AuthError as exc:
                log.info("soft-failing %s: %s", event.event_id, exc.reason)
                soft_failed = True
            await persist_remote(writer, event, before, soft_failed=soft_failed)
        return None

    async def _prev_states(
        self, origin: str, room_version: RoomVersion, event: Event, fill_gaps: bool
    ) -> list[StateSet] | None:
        """The states after each prev event (the sets to resolve), fetching what is
        missing; None when a gap cannot be bridged."""
        prevs = list(event.prev_event_ids)
        missing = await self._missing_prevs(prevs)
        if missing and fill_gaps:
            await self._fetch_missing_events(origin, room_version, event)
            missing = await self._missing_prevs(prevs)
        async with self.db.pool.connection() as conn:
            rows = await event_store.get_events(conn, prevs)
        sets: list[StateSet] = []
        for prev in prevs:
            group = rows[prev].state_group if prev not in missing else None
            if group is not None:
                sets.append(group)
        for prev in missing:
            gap = await self._state_at_gap(origin, room_version, event.room_id, prev)
            if gap is None:
                return None
            sets.append(gap)
        return sets or None

    async def states_before(
        self, origin: str, room_version: RoomVersion, event: Event
    ) -> list[StateSet] | None:
        """The states to resolve for the state before `event`, bridging missing prev
        events with /state_ids rather than fetching them (backfill, which walks the
        DAG backwards, has no forward gaps to fill)."""
        return await self._prev_states(origin, room_version, event, fill_gaps=False)

    async def fetch_auth_chain(
        self, origin: str, room_version: RoomVersion, event: Event
    ) -> dict[str, Event] | None:
        """`event`'s auth chain from `origin`, checked and stored as outliers."""
        return await self._fetch_auth_chain(origin, room_version, event)

    async def _missing_prevs(self, prevs: list[str]) -> list[str]:
        async with self.db.pool.connection() as conn:
            rows = await event_store.get_events(conn, prevs)
        return [p for p in prevs if p not in rows or rows[p].state_group is None]

    # ---- fetching from the origin

    async def _fetch_missing_events(
        self, origin: str, room_version: RoomVersion, event: Event
    ) -> None:
        """Ask the origin for the events between our forward extremities and `event`,
        and take them in depth order (gaps behind them are bridged, not followed)."""
        async with self.db.pool.connection() as conn:
            tips = await rooms.get_forward_extremities(conn, event.room_id)
        body = {
            "earliest_events": [eid for eid, _ in tips],
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min((d for _, d in tips), default=0),
        }
        path = f"/_matrix/federation/v1/get_missing_events/{quote_segment(event.room_id)}"
        try:
            answer = await self.client.post_json(origin, path, body)
        except FederationError as exc:
            log.info("get_missing_events from %s failed: %s", origin, exc)
            return
        pdus = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            return
        fetched = await check_many(
            self.keyring, pdus[:MISSING_EVENTS_LIMIT], room_version, event.room_id
        )
        for missing in sorted(fetched.values(), key=lambda e: (e.depth, e.event_id)):
            error = await self.process_event(origin, room_version, missing, fill_gaps=False)
            if error is not None:
                log.info("missing event %s from %s: %s", missing.event_id, origin, error)

    async def _fetch_auth_chain(
        self, origin: str, room_version: RoomVersion, event: Event
    ) -> dict[str, Event] | None:
        path = (
            f"/_matrix/federation/v1/event_auth/{quote_segment(event.room_id)}"
            f"/{quote_segment(event.event_id)}"
        )
        try:
            answer = await self.client.get_json(origin, path)
        except FederationError as exc:
            log.info("event_auth from %s failed: %s", origin, exc)
            return None
        chain = answer.get("auth_chain") if isinstance(answer, dict) else None
        if not isinstance(chain, list) or len(chain) > MAX_AUTH_CHAIN:
            return None
        events = await check_many(self.keyring, chain, room_version, event.room_id)
        await self._store_batch(events)
        return events

    async def _store_batch(self, events: dict[str, Event]) -> dict[str, str]:
        """Authorise a fetched batch against its own auth events, store it as outliers;
        the rejected ones' reasons."""
        async with self.db.pool.connection() as conn:
            wanted = {a for e in events.values() for a in e.auth_event_ids} - set(events)
            for e in events.values():
                create_id = create_event_id_for_room(e.room_id)
                if e.room_version.room_id_from_create_event and create_id not in events:
                    wanted.add(create_id or "")
            known = await load_events(conn, self.event_cache, wanted)
            rows = await event_store.get_events(conn, wanted)
            known_rejected = {eid for eid, r in rows.items() if r.rejected_reason is not None}
            rejected = authorise_batch(events, known, known_rejected)
            async with conn.transaction():
                await persist_outliers(conn, self.event_cache, events.values(), rejected)
        return rejected

    async def _state_at_gap(
        self, origin: str, room_version: RoomVersion, room_id: str, prev_id: str
    ) -> dict[tuple[str, str], str] | None:
        """The state after `prev_id`, an event we lack the history of: the origin's
        state before it, plus the event itself."""
        client = self.client
        try:
            answer = await client.get_json(
                origin,
                f"/_matrix/federation/v1/state_ids/{quote_segment(room_id)}",
                {"event_id": prev_id},
            )
        except FederationError as exc:
            log.info("state_ids from %s failed: %s", origin, exc)
            return None
        if not isinstance(answer, dict):
            return None
        state_ids = answer.get("pdu_ids")
        chain_ids = answer.get("auth_chain_ids")
        if not isinstance(state_ids, list) or not isinstance(chain_ids, list):
            return None
        wanted = {i for i in [*state_ids, *chain_ids, prev_id] if isinstance(i, str)}
        if len(wanted) > MAX_GAP_EVENTS:
            return None
        async with self.db.pool.connection() as conn:
            need = wanted - await fed_store.known_event_ids(conn, wanted)
        pdus = await self._fetch_events(origin, need)
        events = await check_many(self.keyring, pdus, room_version, room_id)
        rejected = await self._store_batch(events)
        async with self.db.pool.connection() as conn:
            held = await load_events(conn, self.event_cache, wanted)
        out: dict[tuple[str, str], str] = {}
        for event_id in [*state_ids, prev_id]:
            event = held.get(event_id)
            if event is not None and event.is_state and event_id not in rejected:
                out[event.state_tuple] = event_id
        return out

    async def _fetch_events(self, origin: str, event_ids: set[str]) -> list[Any]:
        slots = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(event_id: str) -> Any:
            async with slots:
                try:
                    answer = await self.client.get_json(
                        origin, f"/_matrix/federation/v1/event/{quote_segment(event_id)}"
                    )
                except FederationError:
                    return None
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            return pdus[0] if isinstance(pdus, list) and len(pdus) == 1 else None

        found = await asyncio.gather(*(one(e) for e in sorted(event_ids)))
        return [pdu for pdu in found if pdu is not None]
