"""The space hierarchy: a depth-first walk over `m.space.child` events of local rooms.

Pagination is stateless: the token carries the walk's parameters and how many rooms
were already returned, and the next page walks again and skips them. A walk visits
at most MAX_ROOMS rooms, so a page costs a bounded amount whatever the space holds,
and tokens survive restarts and work on every worker process. Rooms on other servers
are skipped until federation can fill them in.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from federation.events import Event
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import forbidden, invalid_param
from homeserver.services.directory.rooms import allowed_room_ids, room_summary
from homeserver.services.rooms.writer import EventCache, load_events
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.directory.public_rooms import RoomSummaryRow, summaries
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, state

SPACE_CHILD = "m.space.child"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 50
MAX_ROOMS = 1000
# Rooms a user may see in a hierarchy without being in them.
_OPEN_RULES = frozenset({"public", "knock", "knock_restricted"})


@dataclass(frozen=True)
class HierarchyRequest:
    room_id: str
    suggested_only: bool = False
    max_depth: int | None = None
    limit: int | None = None
    from_token: str | None = None


def _valid_order(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 50 and all("\x20" <= c <= "\x7e" for c in value)


def _child_sort_key(event: Event) -> tuple[int, str, int, str]:
    """The spec's order of children: valid `order` strings first, lexicographically,
    then by the child event's timestamp, then by room id."""
    order = event.content.get("order")
    if _valid_order(order):
        return (0, str(order), event.origin_server_ts, event.state_key or "")
    return (1, "", event.origin_server_ts, event.state_key or "")


def _stripped(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "sender": event.sender,
        "content": dict(event.content),
        "origin_server_ts": event.origin_server_ts,
    }


def _token(request: HierarchyRequest, max_depth: int, offset: int) -> str:
    raw = orjson.dumps(
        {"r": request.room_id, "s": request.suggested_only, "d": max_depth, "n": offset}
    )
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _offset(request: HierarchyRequest, max_depth: int) -> int:
    """Rooms already returned, from the `from` token; 400 when it does not belong to
    this walk (another room, or other `suggested_only`/`max_depth`)."""
    if request.from_token is None:
        return 0
    token = request.from_token
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict) or type(value.get("n")) is not int or value["n"] < 0:
        raise invalid_param("Unknown pagination token")
    if (value.get("r"), value.get("s"), value.get("d")) != (
        request.room_id,
        request.suggested_only,
        max_depth,
    ):
        raise invalid_param("suggested_only and max_depth cannot change while paginating")
    return int(value["n"])


class HierarchyService:
    def __init__(self, db: Database, event_cache: EventCache) -> None:
        self.db = db
        self.event_cache = event_cache

    async def hierarchy(self, requester: Requester, request: HierarchyRequest) -> dict[str, Any]:
        limit = DEFAULT_LIMIT if request.limit is None else request.limit
        if limit <= 0:
            raise invalid_param("limit must be positive")
        limit = min(limit, MAX_LIMIT)
        max_depth = MAX_DEPTH if request.max_depth is None else request.max_depth
        if max_depth < 0:
            raise invalid_param("max_depth must not be negative")
        max_depth = min(max_depth, MAX_DEPTH)
        offset = _offset(request, max_depth)
        async with self.db.pool.connection() as conn:
            walk = _Walk(conn, self.event_cache, requester.user_id, request.suggested_only)
            await walk.load_memberships()
            root = await walk.visit(request.room_id)
            if root is None:
                raise forbidden("You cannot view this room's hierarchy")
            rooms = await walk.run(root, max_depth, offset + limit + 1)
        out: dict[str, Any] = {"rooms": rooms[offset : offset + limit]}
        if len(rooms) > offset + limit:
            out["next_batch"] = _token(request, max_depth, offset + limit)
        return out


class _Walk:
    """One depth-first walk, with what it needs to judge every room it meets."""

    def __init__(
        self, conn: Connection, event_cache: EventCache, user_id: str, suggested_only: bool
    ) -> None:
        self.conn = conn
        self.event_cache = event_cache
        self.user_id = user_id
        self.suggested_only = suggested_only
        self.membership: dict[str, str] = {}
        self.visited: set[str] = set()

    async def load_memberships(self) -> None:
        rows = await memberships.rooms_of_user(
            self.conn, self.user_id, ("join", "invite", "knock", "leave", "ban")
        )
        self.membership = {row.room_id: row.membership for row in rows}

    def _may_see(self, row: RoomSummaryRow) -> bool:
        membership = self.membership.get(row.room_id)
        if membership in ("join", "invite"):
            return True
        if membership == "ban":
            return False
        summary = room_summary(row)
        if summary["world_readable"] or summary["join_rule"] in _OPEN_RULES:
            return True
        if summary["join_rule"] == "restricted":
            allowed = allowed_room_ids(row.state.get("m.room.join_rules"))
            return any(self.membership.get(r) == "join" for r in allowed)
        return False

    async def visit(self, room_id: str) -> tuple[RoomSummaryRow, list[Event]] | None:
        """A local room the user may see, with its valid children (in order)."""
        self.visited.add(room_id)
        row = (await summaries(self.conn, [room_id])).get(room_id)
        if row is None or not self._may_see(row):
            return None
        ids = await state.get_current_state_of_type(self.conn, room_id, SPACE_CHILD)
        found = await load_events(self.conn, self.event_cache, ids.values())
        rows = await event_store.get_events(self.conn, list(found))
        children = []
        for event_id, event in found.items():
            via = event.content.get("via")
            row_of_child = rows.get(event_id)
            if row_of_child is None or row_of_child.redacted_by:
                continue
            if not isinstance(via, list) or not via or not all(isinstance(v, str) for v in via):
                continue
            if self.suggested_only and event.content.get("suggested") is not True:
                continue
            children.append(event)
        children.sort(key=_child_sort_key)
        return row, children

    async def run(
        self,
        root: tuple[RoomSummaryRow, list[Event]],
        max_depth: int,
        wanted: int,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        stack: list[tuple[tuple[RoomSummaryRow, list[Event]], int]] = [(root, 0)]
        while stack and len(out) < wanted:
            (row, children), depth = stack.pop()
            entry = room_summary(row, extended=True)
            entry["children_state"] = [_stripped(child) for child in children]
            out.append(entry)
            if depth >= max_depth:
                continue
            found = []
            for child in children:
                child_id = child.state_key or ""
                if child_id in self.visited or len(self.visited) >= MAX_ROOMS:
                    continue
                visited = await self.visit(child_id)
                if visited is not None:
                    found.append((visited, depth + 1))
            stack.extend(reversed(found))
        return out
