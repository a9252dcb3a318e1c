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
from homeserver.services.rooms.event_cache import EventCache, load_event, load_events
from homeserver.services.rooms.server_acl import ServerAclService
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
# A replica read for timestamp_to_event is taken only for times at least this old:
# a replica in rotation has every event committed more than 2 s ago (`RECENT_S`),
# and an event is committed well within 2 s of being stamped.
SETTLED_AGE_MS = 4000


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
        replica that has the event and every event the answer is made of."""
        ids, chain, _ = await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._state_ids(conn, origin, room_id, event_id),
            settled=lambda answer: answer[2],
        )
        return ids, chain

    async def state(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """`/state`: the state before `event_id` and its auth chain as PDUs, on a
        replica when it holds all of them (else the primary: never a short state)."""

        async def read(conn: Connection) -> tuple[JsonDict, bool]:
            ids, chain, complete = await self._state_ids(conn, origin, room_id, event_id)
            pdus, found = await self._pdus(conn, ids)
            auth_chain, chain_found = await self._pdus(conn, chain)
            answer = {"pdus": pdus, "auth_chain": auth_chain}
            return answer, complete and found and chain_found

        answer, _ = await read_recent(self.db, self.replicas, read, lambda a: a[1])
        return answer

    async def _state_ids(
        self, conn: Connection, origin: str, room_id: str, event_id: str
    ) -> tuple[set[str], set[str], bool]:
        """The state before the event, its auth chain, and whether every event it was
        worked out from (the prev events of a state event) was found."""
        row = await self._row(conn, origin, event_id)
        if row.room_id != room_id or row.state_group is None:
            raise not_found("Event not found")
        after = await state.get_state(conn, row.state_group)
        event = load_event(row)
        before = dict(after)
        complete = True
        if event.is_state and after.get(event.state_tuple) == event.event_id:
            prevs = await event_store.get_events(conn, event.prev_event_ids)
            complete = prevs.keys() >= set(event.prev_event_ids)
            groups = [r.state_group for r in prevs.values() if r.state_group is not None]
            earlier = await state.get_state(conn, groups[0], [event.state_tuple]) if groups else {}
            before.pop(event.state_tuple)
            before.update(earlier)
        ids = set(before.values())
        return ids, await fed_store.auth_chain_ids(conn, ids), complete

    async def pdus(self, event_ids: Iterable[str]) -> list[JsonDict]:
        """The events we hold of `event_ids`, on a replica when it holds them all."""
        wanted = list(event_ids)
        pdus, _ = await read_recent(
            self.db, self.replicas, lambda conn: self._pdus(conn, wanted), lambda a: a[1]
        )
        return pdus

    async def _pdus(
        self, conn: Connection, event_ids: Iterable[str]
    ) -> tuple[list[JsonDict], bool]:
        """The PDUs found, and whether all were."""
        wanted = set(event_ids)
        rows = await event_store.get_events(conn, wanted)
        return [pdu_of(rows[e]) for e in sorted(rows)], rows.keys() >= wanted

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """The event's auth chain, on a replica that has the event and all the chain."""

        async def read(conn: Connection) -> tuple[list[JsonDict], bool]:
            row = await self._row(conn, origin, event_id)
            if row.room_id != room_id:
                raise not_found("Event not found")
            return await self._pdus(conn, await fed_store.auth_chain_ids(conn, [event_id]))

        chain, _ = await read_recent(self.db, self.replicas, read, lambda a: a[1])
        return {"auth_chain": chain}

    async def _walk_back(
        self, conn: Connection, start: list[str], stop: set[str], limit: int
    ) -> tuple[list[EventRow], bool]:
        """Events reached from `start` along prev edges (start included), newest
        first, not past `stop`, at most `limit`; and whether every event met was
        found (one missing on a replica may be there on the primary)."""
        seen: set[str] = set(stop)
        frontier = [e for e in start if e not in seen]
        out: list[EventRow] = []
        complete = True
        while frontier and len(out) < limit:
            rows = await event_store.get_events(conn, frontier)
            complete = complete and rows.keys() >= set(frontier)
            seen.update(frontier)
            for event_id in frontier:
                row = rows.get(event_id)
                if row is not None and row.rejected_reason is None and len(out) < limit:
                    out.append(row)
            prevs = await fed_store.prev_event_ids(conn, frontier)
            frontier = sorted({p for ps in prevs.values() for p in ps} - seen)
        return out, complete

    async def backfill(self, origin: str, room_id: str, start: list[str], limit: int) -> JsonDict:
        """History for a peer, on a recent replica when its answer is the primary's: it
        has every event asked from and met on the way, and the peer may see all it
        walked (a replica behind may lack the peer's join); otherwise on the primary."""
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
        walked, complete = await self._walk_back(conn, start, set(), limit)
        kept = [r for r in walked if r.room_id == room_id and await self._entitled(conn, origin, r)]
        return kept, complete and len(kept) == len(walked)

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
    ) -> JsonDict:
        """The events between `earliest` and `latest`, on a recent replica when it has
        every latest event and every event met, and withholds none of them from the
        peer; otherwise on the primary (a replica behind must not answer short)."""
        rows, _ = await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._missing_events(
                conn, origin, room_id, earliest, latest, min(limit, MAX_MISSING), min_depth
            ),
            settled=lambda answer: answer[1],
        )
        return {"events": [pdu_of(r) for r in rows]}

    async def _missing_events(
        self,
        conn: Connection,
        origin: str,
        room_id: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
    ) -> tuple[list[EventRow], bool]:
        """The events to send, oldest first, and whether nothing was missing or withheld."""
        found = await event_store.get_events(conn, latest)
        prevs = await fed_store.prev_event_ids(conn, latest)
        start = sorted({p for ps in prevs.values() for p in ps})
        rows, complete = await self._walk_back(conn, start, set(earliest) | set(latest), limit)
        kept = []
        withheld = False
        for row in rows:
            event = load_event(row)
            if row.room_id != room_id or event.depth < min_depth:
                continue
            if await self._entitled(conn, origin, row):
                kept.append((event.depth, row))
            else:
                withheld = True
        kept.sort(key=lambda item: item[0])
        settled = complete and not withheld and found.keys() >= set(latest)
        return [r for _, r in kept], settled

    async def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, *, forward: bool
    ) -> JsonDict:
        """The event of our timeline closest to `ts` in the direction asked, among
        those the asking server may see. On a recent replica when its answer cannot
        lean on the last seconds it may lack (backwards from a time at least
        `SETTLED_AGE_MS` old, or forwards to an event that old) and no nearer event
        was withheld (a replica behind may lack the peer's join); else on the primary."""
        await self.server_acl.check(origin, room_id)

        def settled(answer: tuple[JsonDict, bool]) -> bool:
            found, withheld = answer
            cutoff = now_ms() - SETTLED_AGE_MS
            return not withheld and (int(found["origin_server_ts"]) if forward else ts) < cutoff

        found, _ = await read_recent(
            self.db,
            self.replicas,
            lambda conn: self._near_timestamp(conn, origin, room_id, ts, forward),
            settled,
        )
        return found

    async def _near_timestamp(
        self, conn: Connection, origin: str, room_id: str, ts: int, forward: bool
    ) -> tuple[JsonDict, bool]:
        """The nearest event the peer may see, and whether a nearer one was withheld."""
        rows = await timeline.events_near_timestamp(
            conn, room_id, ts, forward=forward, upper=None, limit=TIMESTAMP_CANDIDATES
        )
        for n, row in enumerate(rows):
            if await self._entitled(conn, origin, row):
                event = load_event(row)
                found = {"event_id": event.event_id, "origin_server_ts": event.origin_server_ts}
                return found, n > 0
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
