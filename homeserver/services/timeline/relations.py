"""Relations for clients: the children of an event (`/relations`) and a room's threads
(`/threads`). Both hand out events, so history visibility applies to every one, and
both bundle aggregations with the events they return."""

from __future__ import annotations

from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import invalid_param, not_found
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.timeline.format import format_events
from homeserver.services.timeline.pagination import (
    START,
    gap_before,
    parse_bool,
    parse_direction,
    parse_limit,
    parse_token,
    resolve,
    token_for,
)
from homeserver.services.timeline.visibility import (
    event_of,
    event_room_access,
    filter_visible,
    room_access,
)
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline import relations as relation_store
from homeserver.storage.timeline.timeline import Position

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# How many relations deep `recurse=true` follows (the spec asks for at least 3).
MAX_RECURSION = 3


class RelationService:
    """The children of an event and a room's threads, as the reader may see them."""

    def __init__(self, db: Database, cache: EventCache) -> None:
        self.db = db
        self.cache = cache

    async def relations(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        direction: str | None,
        limit: str | None,
        recurse: str | None,
    ) -> JsonDict:
        """`GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`."""
        forward = parse_direction(direction, default="b")
        count = parse_limit(limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        recursive = parse_bool(recurse, "recurse")
        start_token = parse_token(from_token) if from_token is not None else None
        end_token = parse_token(to_token) if to_token is not None else None
        user_id = requester.user_id
        async with self.db.pool.connection() as conn:
            access = await event_room_access(conn, self.cache, user_id, room_id)
            parent = (await event_store.get_events(conn, [event_id])).get(event_id)
            if parent is None or parent.room_id != room_id:
                raise not_found("Event not found")
            if not (await filter_visible(conn, self.cache, user_id, [parent])).rows:
                raise not_found("Event not found")
            cursor: Position | None = None
            if start_token is not None:
                cursor = await resolve(conn, room_id, start_token)
            elif forward:
                cursor = START
            bound = await resolve(conn, room_id, end_token) if end_token is not None else None
            if access.upper is not None:
                if forward:
                    bound = access.upper if bound is None else min(bound, access.upper)
                else:
                    cursor = access.upper if cursor is None else min(cursor, access.upper)
            lower, upper = (cursor, bound) if forward else (bound, cursor)
            rows = await relation_store.children(
                conn,
                room_id,
                event_id,
                rel_type=rel_type,
                event_type=event_type,
                lower=lower,
                upper=upper,
                forward=forward,
                limit=count + 1,
                max_depth=MAX_RECURSION if recursive else 1,
            )
            more = len(rows) > count
            rows = rows[:count]
            chunk = await _visible_chunk(conn, self.cache, requester, rows)
        response: JsonDict = {"chunk": chunk}
        if more and rows:
            last = rows[-1]
            assert last.stream_ordering is not None
            position = Position(event_of(self.cache, last).depth, last.stream_ordering)
            response["next_batch"] = token_for(position if forward else gap_before(position))
        if from_token is not None:
            response["prev_batch"] = from_token
        if recurse is not None:
            response["recursion_depth"] = MAX_RECURSION if recursive else 1
        return response

    async def threads(
        self,
        requester: Requester,
        room_id: str,
        *,
        include: str | None,
        from_token: str | None,
        limit: str | None,
    ) -> JsonDict:
        """`GET /v1/rooms/{roomId}/threads`: thread roots, most recently active first."""
        if include not in (None, "all", "participated"):
            raise invalid_param("include must be 'all' or 'participated'")
        count = parse_limit(limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT, minimum=1)
        start_token = parse_token(from_token) if from_token is not None else None
        user_id = requester.user_id
        async with self.db.pool.connection() as conn:
            access = await room_access(conn, self.cache, user_id, room_id)
            upper = access.upper
            if start_token is not None:
                position = await resolve(conn, room_id, start_token)
                upper = position if upper is None else min(upper, position)
            roots = await relation_store.thread_roots(
                conn,
                room_id,
                participant=user_id if include == "participated" else None,
                upper=upper,
                limit=count + 1,
            )
            more = len(roots) > count
            roots = roots[:count]
            rows = await event_store.get_events(conn, [root for root, _ in roots])
            ordered = [rows[root] for root, _ in roots if root in rows]
            chunk = await _visible_chunk(conn, self.cache, requester, ordered)
        response: JsonDict = {"chunk": chunk}
        if more and roots:
            response["next_batch"] = token_for(gap_before(roots[-1][1]))
        return response


async def _visible_chunk(
    conn: Connection, cache: EventCache, requester: Requester, rows: list[EventRow]
) -> list[JsonDict]:
    """The rows the requester may see, as client events with bundled aggregations."""
    visible = await filter_visible(conn, cache, requester.user_id, rows)
    return await format_events(
        conn,
        cache,
        [row.event_id for row in visible.rows],
        user_id=requester.user_id,
        device_id=requester.device_id,
        rows={row.event_id: row for row in visible.rows},
        memberships=visible.memberships,
        aggregations=True,
    )
