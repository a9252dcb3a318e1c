"""What other servers may read of our rooms: events, the state at an event, auth
chains, backfill and missing events. A server is entitled to an event when the room
is world-readable at it, or when one of its users could see it by history visibility
(joined at the event; invited at it for `invited`; for `shared`, in the room now or
joined at it). PDUs go out as stored: the signed JSON, without `unsigned`."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from federation.events import MEMBER
from federation.identifiers import domain_of
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, not_found
from homeserver.services.core.replica_reads import read_recent
from homeserver.services.remote.room_servers import RoomServers
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.services.rooms.writer import EventCache, load_event, load_events
from homeserver.services.timeline.visibility import HISTORY_KEY, history_visibility_of
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.directory import aliases
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms, state
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline import timeline

MAX_BACKFILL = 100
MAX_MISSING = 20
# Events near a time looked at for one the asking server may see.
TIMESTAMP_CANDIDATES = 20


def denied() -> ServiceError:
    return ServiceError(403, "M_FORBIDDEN", "Your server may not read this")


def pdu_of(row: EventRow) -> JsonDict:
    pdu: JsonDict = orjson.loads(row.json)
    pdu.pop("unsigned", None)
    return pdu


class FederationReads:
    def __init__(
        self,
        db: Database,
        replicas: Replicas,
        event_cache: EventCache,
        server_acl: ServerAclService,
        room_servers: RoomServers,
        server_name: str,
    ) -> None:
        self.db = db
        self.replicas = replicas
        self.event_cache = event_cache
        self.server_acl = server_acl
        self.room_servers = room_servers
        self.server_name = server_name

    def _envelope(self, pdus: list[JsonDict]) -> JsonDict:
        return {
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
        }

    async def _entitled(self, conn: Connection, origin: str, row: EventRow) -> bool:
        if row.state_group is None:
            return False
        members = await state.get_state_of_type(conn, row.state_group, MEMBER)
        theirs = {k: v for k, v in members.items() if domain_of(k[1]) == origin}
        hv_ids = await state.get_state(conn, row.state_group, [HISTORY_KEY])
        wanted = [*theirs.values(), *hv_ids.values()]
        found = await load_events(conn, self.event_cache, wanted)
        visibility = history_visibility_of(found.get(hv_ids.get(HISTORY_KEY, "")))
        if visibility == "world_readable":
            return True
        states = {found[e].membership for e in theirs.values() if e in found}
        if "join" in states or (visibility == "invited" and "invite" in states):
            return True
        if visibility == "shared":
            return origin in await room_servers.servers_in_room(conn, row.room_id)
        return False

    async def _row(self, conn: Connection, origin: str, event_id: str) -> EventRow:
        row = (await event_store.get_events(conn, [event_id])).get(event_id)
        if row is None or not await self._entitled(conn, origin, row):
            raise not_found("Event not found")  # the same answer either way: no probing
        return row

    async def event(self, origin: str, event_id: str) -> JsonDict:
        # An event and the state at it never change: a replica that has it can answer.
        row = await read_recent(
            self.db, self.replicas, lambda conn: self._row(conn, origin, event_id)
        )
        # The route names no room, so the ACL is checked once the event's room is known.
        await self.server_acl.check(origin, row.room_id)
        return self._envelope([pdu_of(row)])

    async def state_ids(
        self, origin: str, room_id: str, event_id: str
    ) -> tuple[set[str], set[str]]:
        """The state before `event_id`, and its auth chain: history, so read on a
        replica that has the event."""
        return await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._state_ids(conn, origin, room_id, event_id),
        )

    async def _state_ids(
        self, conn: Connection, origin: str, room_id: str, event_id: str
    ) -> tuple[set[str], set[str]]:
        row = await self._row(conn, origin, event_id)
        if row.room_id != room_id or row.state_group is None:
            raise not_found("Event not found")
        after = await state.get_state(conn, row.state_group)
        event = load_event(row)
        before = dict(after)
        if event.is_state and after.get(event.state_tuple) == event.event_id:
            prevs = await event_store.get_events(conn, event.prev_event_ids)
            groups = [r.state_group for r in prevs.values() if r.state_group is not None]
            earlier = await state.get_state(conn, groups[0], [event.state_tuple]) if groups else {}
            before.pop(event.state_tuple)
            before.update(earlier)
        ids = set(before.values())
        return ids, await fed_store.auth_chain_ids(conn, ids)

    async def pdus(self, event_ids: Iterable[str]) -> list[JsonDict]:
        async with self.db.pool.connection() as conn:
            rows = await event_store.get_events(conn, event_ids)
        return [pdu_of(rows[e]) for e in sorted(rows)]

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        async with self.db.pool.connection() as conn:
            row = await self._row(conn, origin, event_id)
            if row.room_id != room_id:
                raise not_found("Event not found")
            chain = await fed_store.auth_chain_ids(conn, [event_id])
        return {"auth_chain": await self.pdus(chain)}

    async def _walk_back(
        self, conn: Connection, start: list[str], stop: set[str], limit: int
    ) -> list[EventRow]:
        """Events reached from `start` along prev edges (start included), newest
        first, not past `stop`, at most `limit`."""
        seen: set[str] = set(stop)
        frontier = [e for e in start if e not in seen]
        out: list[EventRow] = []
        while frontier and len(out) < limit:
            rows = await event_store.get_events(conn, frontier)
            seen.update(frontier)
            for event_id in frontier:
                row = rows.get(event_id)
                if row is not None and row.rejected_reason is None and len(out) < limit:
                    out.append(row)
            prevs = await fed_store.prev_event_ids(conn, frontier)
            frontier = sorted({p for ps in prevs.values() for p in ps} - seen)
        return out

    async def backfill(self, origin: str, room_id: str, start: list[str], limit: int) -> JsonDict:
        """History for a peer, on a recent replica when its answer is the primary's: it
        has every event asked from and the peer may see all it walked (a replica behind
        may lack the peer's join); otherwise on the primary."""
        rows, _ = await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._backfill(conn, origin, room_id, start, min(limit, MAX_BACKFILL)),
            settled=lambda answer: answer[1],
        )
        return self._envelope([pdu_of(r) for r in rows])

    async def _backfill(
        self, conn: Connection, origin: str, room_id: str, start: list[str], limit: int
    ) -> tuple[list[EventRow], bool]:
        """The events to send, and whether nothing was missing or withheld."""
        if await rooms.get_room(conn, room_id) is None:
            raise not_found("Unknown room")
        walked = await self._walk_back(conn, start, set(), limit)
        kept = [r for r in walked if r.room_id == room_id and await self._entitled(conn, origin, r)]
        starts = await event_store.get_events(conn, start)
        return kept, len(kept) == len(walked) and starts.keys() >= set(start)

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
    ) -> JsonDict:
        async with self.db.pool.connection() as conn:
            prevs = await fed_store.prev_event_ids(conn, latest)
            start = sorted({p for ps in prevs.values() for p in ps})
            rows = await self._walk_back(
                conn, start, set(earliest) | set(latest), min(limit, MAX_MISSING)
            )
            kept = []
            for row in rows:
                event = load_event(row)
                if (
                    row.room_id == room_id
                    and event.depth >= min_depth
                    and await self._entitled(conn, origin, row)
                ):
                    kept.append((event.depth, row))
        kept.sort(key=lambda item: item[0])
        return {"events": [pdu_of(r) for _, r in kept]}

    async def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, *, forward: bool
    ) -> JsonDict:
        """The event of our timeline closest to `ts` in the direction asked, among
        those the asking server may see."""
        await self.server_acl.check(origin, room_id)
        async with self.db.pool.connection() as conn:
            rows = await timeline.events_near_timestamp(
                conn, room_id, ts, forward=forward, upper=None, limit=TIMESTAMP_CANDIDATES
            )
            for row in rows:
                if await self._entitled(conn, origin, row):
                    event = load_event(row)
                    return {"event_id": event.event_id, "origin_server_ts": event.origin_server_ts}
        raise not_found("No event found near that time")

    async def directory(self, alias: str) -> JsonDict:
        """The room one of our aliases names, with the servers in it (ours first)."""
        async with self.db.pool.connection() as conn:
            room_id = await aliases.get_alias(conn, alias)
        if room_id is None:
            raise not_found("Room alias not found")
        servers = await self.room_servers.servers(room_id)
        ordered = [self.server_name, *sorted(servers - {self.server_name})]
        return {"room_id": room_id, "servers": ordered}
