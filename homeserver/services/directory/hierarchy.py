"""The space hierarchy: a depth-first walk over `m.space.child` events, and the
federation `/hierarchy` that lets other servers walk our rooms.

Pagination is stateless: the token carries the walk's parameters and how many rooms
were already returned, and the next page walks again and skips them. A walk visits
at most MAX_ROOMS rooms, so a page costs a bounded amount whatever the space holds,
and tokens survive restarts and work on every worker process. A room our server is
not in is asked of the servers its `via` names (at most MAX_REMOTE_ASKS a walk); their
answer also summarises its children, which then need no request of their own unless
they are spaces to walk into.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from federation.events import Event
from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import forbidden, invalid_param, not_found
from homeserver.services.directory.rooms import room_summary
from homeserver.services.remote.client import FederationClient, FederationError, quote_segment
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.directory.public_rooms import summaries
from homeserver.storage.remote.room_servers import servers_in_room
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, state

SPACE_CHILD = "m.space.child"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 50
MAX_ROOMS = 1000
MAX_REMOTE_ASKS = 20
MAX_VIA_TRIED = 3
REMOTE_TIMEOUT = 15.0
REMOTE_MAX_BYTES = 5 * 1024 * 1024
FEDERATION_HIERARCHY = "/_matrix/federation/v1/hierarchy"
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


def _child_sort_key(child: JsonDict) -> tuple[int, str, int, str]:
    """The spec's order of children: valid `order` strings first, lexicographically,
    then by the child event's timestamp, then by room id."""
    order = child["content"].get("order")
    ts = child.get("origin_server_ts")
    ts = ts if type(ts) is int else 0
    if _valid_order(order):
        return (0, str(order), ts, child["state_key"])
    return (1, "", ts, child["state_key"])


def _is_child(child: Any, suggested_only: bool) -> bool:
    """A well-formed `m.space.child` (stripped) naming servers to reach the room by."""
    if not isinstance(child, dict) or child.get("type") != SPACE_CHILD:
        return False
    content, key = child.get("content"), child.get("state_key")
    if not isinstance(key, str) or not key.startswith("!") or not isinstance(content, dict):
        return False
    via = content.get("via")
    if not isinstance(via, list) or not via or not all(isinstance(v, str) for v in via):
        return False
    return not suggested_only or content.get("suggested") is True


def _remote_summary(value: Any) -> JsonDict | None:
    """A summary from another server, if it has what a client relies on."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("room_id"), str)
        and type(value.get("num_joined_members")) is int
        and isinstance(value.get("world_readable"), bool)
        and isinstance(value.get("guest_can_join"), bool)
    ):
        return {k: v for k, v in value.items() if k != "children_state"}
    return None


def _stripped(event: Event) -> JsonDict:
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


@dataclass
class _Node:
    """A room as the walk sees it: its summary and its children (stripped events, in
    order); `children` is None when they are not known (a remote child summarised by
    its parent's server)."""

    entry: JsonDict
    children: list[JsonDict] | None


def _open_to_anyone(entry: JsonDict) -> bool:
    return bool(entry.get("world_readable")) or entry.get("join_rule") in _OPEN_RULES


def _allowed_rooms(entry: JsonDict) -> list[str]:
    if entry.get("join_rule") not in ("restricted", "knock_restricted"):
        return []
    allowed = entry.get("allowed_room_ids")
    return [r for r in allowed if isinstance(r, str)] if isinstance(allowed, list) else []


async def _local_node(
    conn: Connection, cache: EventCache, room_id: str, suggested_only: bool
) -> _Node | None:
    """A room known here, with its valid children; None when unknown."""
    row = (await summaries(conn, [room_id])).get(room_id)
    if row is None:
        return None
    ids = await state.get_current_state_of_type(conn, room_id, SPACE_CHILD)
    found = await load_events(conn, cache, ids.values())
    rows = await event_store.get_events(conn, list(found))
    children = []
    for event_id, event in found.items():
        row_of_child = rows.get(event_id)
        if row_of_child is None or row_of_child.redacted_by:
            continue
        child = _stripped(event)
        if _is_child(child, suggested_only):
            children.append(child)
    children.sort(key=_child_sort_key)
    return _Node(room_summary(row, extended=True), children)


class HierarchyService:
    def __init__(
        self,
        db: Database,
        event_cache: EventCache,
        federation_client: FederationClient,
        server_name: str,
    ) -> None:
        self.db = db
        self.event_cache = event_cache
        self.federation_client = federation_client
        self.server_name = server_name

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
        walk = _Walk(self, requester.user_id, request.suggested_only)
        await walk.load_memberships()
        root = await walk.visit(request.room_id, [], need_children=True)
        if root is None:
            raise forbidden("You cannot view this room's hierarchy")
        rooms = await walk.run(root, max_depth, offset + limit + 1)
        out: dict[str, Any] = {"rooms": rooms[offset : offset + limit]}
        if len(rooms) > offset + limit:
            out["next_batch"] = _token(request, max_depth, offset + limit)
        return out

    async def is_local(self, conn: Connection, room_id: str) -> bool:
        """Whether our server is in the room (so its state here is current)."""
        return self.server_name in await servers_in_room(conn, room_id)

    async def federation_hierarchy(
        self, origin: str, room_id: str, suggested_only: bool
    ) -> JsonDict:
        """What another server may know of one of our rooms and its children: rooms it
        may not see are 404 (the room) or listed as inaccessible (a child)."""
        async with self.db.pool.connection() as conn:
            node = None
            if await self.is_local(conn, room_id):
                node = await _local_node(conn, self.event_cache, room_id, suggested_only)
            if node is None or not await self._origin_may_see(conn, origin, node.entry):
                raise not_found("Unknown room, or not one your server may see")
            children: list[JsonDict] = []
            inaccessible: list[str] = []
            for child in node.children or []:
                child_id = child["state_key"]
                if not await self.is_local(conn, child_id):
                    continue
                found = await _local_node(conn, self.event_cache, child_id, suggested_only)
                if found is None:
                    continue
                if await self._origin_may_see(conn, origin, found.entry):
                    children.append(found.entry)
                else:
                    inaccessible.append(child_id)
        room = {**node.entry, "children_state": node.children or []}
        return {"room": room, "children": children, "inaccessible_children": inaccessible}

    async def _origin_may_see(self, conn: Connection, origin: str, entry: JsonDict) -> bool:
        """Open rooms, rooms the server is in, and restricted rooms whose allowed rooms
        it is in (its users may join them; the server judges which of them may)."""
        if _open_to_anyone(entry) or origin in await servers_in_room(conn, entry["room_id"]):
            return True
        for allowed in _allowed_rooms(entry):
            if origin in await servers_in_room(conn, allowed):
                return True
        return False

    async def ask_remote(
        self, room_id: str, via: Sequence[str], suggested_only: bool
    ) -> JsonDict | None:
        """The first answer of a `via` server to federation `/hierarchy` for a room."""
        for server in [v for v in via if v != self.server_name][:MAX_VIA_TRIED]:
            try:
                answer = await self.federation_client.get_json(
                    server,
                    f"{FEDERATION_HIERARCHY}/{quote_segment(room_id)}",
                    {"suggested_only": "true" if suggested_only else "false"},
                    time_limit=REMOTE_TIMEOUT,
                    max_size=REMOTE_MAX_BYTES,
                )
            except FederationError:
                continue
            room = answer.get("room") if isinstance(answer, dict) else None
            summary = _remote_summary(room)
            if summary is not None and summary["room_id"] == room_id:
                return {**answer, "room": room}
        return None


@dataclass
class _Walk:
    """One depth-first walk, with what it needs to judge every room it meets."""

    service: HierarchyService
    user_id: str
    suggested_only: bool
    membership: dict[str, str] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    # What other servers told of rooms we are not in.
    remote_summaries: dict[str, JsonDict] = field(default_factory=dict)
    inaccessible: set[str] = field(default_factory=set)
    remote_asks: int = 0

    async def load_memberships(self) -> None:
        async with self.service.db.pool.connection() as conn:
            rows = await memberships.rooms_of_user(
                conn, self.user_id, ("join", "invite", "knock", "leave", "ban")
            )
        self.membership = {row.room_id: row.membership for row in rows}

    def _may_see(self, entry: JsonDict) -> bool:
        membership = self.membership.get(entry["room_id"])
        if membership in ("join", "invite"):
            return True
        if membership == "ban":
            return False
        if _open_to_anyone(entry):
            return True
        return any(self.membership.get(r) == "join" for r in _allowed_rooms(entry))

    async def visit(self, room_id: str, via: list[str], *, need_children: bool) -> _Node | None:
        """A room the user may see: ours from our state, another server's from its
        answer (or its parent's summary when its children are not needed)."""
        self.visited.add(room_id)
        service = self.service
        async with service.db.pool.connection() as conn:
            node = None
            if await service.is_local(conn, room_id):
                node = await _local_node(conn, service.event_cache, room_id, self.suggested_only)
        if node is None:
            node = await self._remote(room_id, via, need_children)
        if node is None or not self._may_see(node.entry):
            return None
        return node

    async def _remote(self, room_id: str, via: list[str], need_children: bool) -> _Node | None:
        known = self.remote_summaries.get(room_id)
        if room_id in self.inaccessible:
            return None
        if known is not None and (not need_children or known.get("room_type") != "m.space"):
            return _Node(known, None)
        if not via or self.remote_asks >= MAX_REMOTE_ASKS:
            return _Node(known, None) if known is not None else None
        self.remote_asks += 1
        answer = await self.service.ask_remote(room_id, via, self.suggested_only)
        if answer is None:
            return _Node(known, None) if known is not None else None
        for child in answer.get("children") or []:
            summary = _remote_summary(child)
            if summary is not None:
                self.remote_summaries.setdefault(summary["room_id"], summary)
        gone = answer.get("inaccessible_children")
        if isinstance(gone, list):
            self.inaccessible.update(r for r in gone if isinstance(r, str))
        room = answer["room"]
        states = room.get("children_state")
        children = [
            {
                k: c[k]
                for k in ("type", "state_key", "sender", "content", "origin_server_ts")
                if k in c
            }
            for c in (states if isinstance(states, list) else [])
            if _is_child(c, self.suggested_only)
        ]
        children.sort(key=_child_sort_key)
        return _Node(_remote_summary(room) or {}, children)

    async def run(self, root: _Node, max_depth: int, wanted: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        stack: list[tuple[_Node, int]] = [(root, 0)]
        while stack and len(out) < wanted:
            node, depth = stack.pop()
            out.append({**node.entry, "children_state": node.children or []})
            if depth >= max_depth:
                continue
            found = []
            for child in node.children or []:
                child_id = child["state_key"]
                if child_id in self.visited or len(self.visited) >= MAX_ROOMS:
                    continue
                visited = await self.visit(
                    child_id, child["content"]["via"], need_children=depth + 1 < max_depth
                )
                if visited is not None:
                    found.append((visited, depth + 1))
            stack.extend(reversed(found))
        return out
