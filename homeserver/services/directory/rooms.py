"""The room directory: aliases, `m.room.canonical_alias` checks, and which rooms are
published in the public room list (and that list itself).

Publishing is open to any joined member with the power to send state
(`state_default`), or a server admin: the spec leaves the policy to servers, and
a room's moderators are the people who decide whether it is public.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from federation.events import Event, StateKey
from federation.identifiers import is_valid_server_name, server_name_of
from federation.power_levels import (
    named_level,
    required_level_in_state,
    user_level,
    user_level_in_state,
)
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, forbidden, invalid_param, not_found
from homeserver.services.remote.client import FederationClient, FederationError, RequestFailed
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.writer import EventNotAllowed, EventWriter
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.directory import aliases
from homeserver.storage.directory.public_rooms import (
    DirectoryFilter,
    RoomSummaryRow,
    count_published,
    published_rooms,
)
from homeserver.storage.rooms import memberships, rooms, state

CANONICAL_ALIAS = "m.room.canonical_alias"
MAX_ALIAS_BYTES = 255
DEFAULT_PUBLIC_ROOMS_LIMIT = 100
MAX_PUBLIC_ROOMS_LIMIT = 500
PUBLIC_ROOMS_PATH = "/_matrix/federation/v1/publicRooms"
REMOTE_DIRECTORY_TIMEOUT = 20.0
REMOTE_DIRECTORY_MAX_BYTES = 5 * 1024 * 1024


def alias_server(alias: str) -> str:
    """The server part of a well-formed room alias; M_INVALID_PARAM otherwise."""
    server = server_name_of(alias, "#")
    if server is None or len(alias.encode()) > MAX_ALIAS_BYTES or alias.startswith("#:"):
        raise invalid_param(f"{alias!r} is not a valid room alias")
    return server


async def current_state_events(
    conn: Connection, cache: EventCache, room_id: str, keys: Iterable[StateKey]
) -> dict[StateKey, Event]:
    """The current state events of a room at the given keys (absent ones left out)."""
    ids = await state.get_current_state(conn, room_id, keys)
    found = await load_events(conn, cache, ids.values())
    return {key: found[eid] for key, eid in ids.items() if eid in found}


_POWER_KEYS: list[StateKey] = [("m.room.create", ""), ("m.room.power_levels", "")]


async def may_send_state(
    conn: Connection, cache: EventCache, room_id: str, user_id: str, event_type: str
) -> bool:
    """Whether the user's power in the room is enough for a state event of this type."""
    power = await current_state_events(conn, cache, room_id, _POWER_KEYS)
    return user_level_in_state(user_id, power) >= required_level_in_state(event_type, "", power)


async def check_canonical_alias(
    conn: Connection, cache: EventCache, room_id: str, content: Mapping[str, Any]
) -> None:
    """Aliases an `m.room.canonical_alias` event adds must be well-formed (M_INVALID_PARAM)
    and point at this room (M_BAD_ALIAS); ones already in the current event are not
    checked again. Only our own aliases can be vouched for: there is no federation
    query yet, so a new alias on another server is refused."""
    alias = content.get("alias")
    alt = content.get("alt_aliases")
    alt = [] if alt is None else alt
    if alias is not None and not isinstance(alias, str):
        raise invalid_param("alias must be a string")
    if not isinstance(alt, list) or not all(isinstance(a, str) for a in alt):
        raise invalid_param("alt_aliases must be a list of strings")
    current = await current_state_events(conn, cache, room_id, [(CANONICAL_ALIAS, "")])
    old = current.get((CANONICAL_ALIAS, ""))
    known: set[str] = set()
    if old is not None:
        old_alt = old.content.get("alt_aliases")
        known.update(
            a for a in (old_alt if isinstance(old_alt, list) else []) if isinstance(a, str)
        )
        if isinstance(old.content.get("alias"), str):
            known.add(old.content["alias"])
    new = [a for a in ([alias] if alias else []) + alt if a not in known]
    for candidate in new:
        alias_server(candidate)
    if new and set(new) != await aliases.aliases_pointing_at(conn, new, room_id):
        raise ServiceError(400, "M_BAD_ALIAS", "An alias does not point at this room")


def room_summary(row: RoomSummaryRow, *, extended: bool = False) -> dict[str, Any]:
    """A room's directory entry; `extended` adds what the space hierarchy shows."""

    def text(event_type: str, key: str) -> str | None:
        content = row.state.get(event_type)
        value = content.get(key) if isinstance(content, dict) else None
        return value if isinstance(value, str) else None

    join_rule = text("m.room.join_rules", "join_rule")
    out: dict[str, Any] = {
        "room_id": row.room_id,
        "num_joined_members": row.joined_members,
        "world_readable": text("m.room.history_visibility", "history_visibility")
        == "world_readable",
        "guest_can_join": text("m.room.guest_access", "guest_access") == "can_join",
        # Without a join rules event nobody can join: that is "invite", not "public".
        "join_rule": join_rule or "invite",
    }
    optional = {
        "name": text("m.room.name", "name"),
        "topic": text("m.room.topic", "topic"),
        "avatar_url": text("m.room.avatar", "url"),
        "room_type": text("m.room.create", "type"),
    }
    out.update({k: v for k, v in optional.items() if v})
    alias = text(CANONICAL_ALIAS, "alias")
    if alias and alias.startswith("#"):
        out["canonical_alias"] = alias
    if extended:
        out["room_version"] = row.room_version
        encryption = text("m.room.encryption", "algorithm")
        if encryption:
            out["encryption"] = encryption
        allowed = allowed_room_ids(row.state.get("m.room.join_rules"))
        if join_rule in ("restricted", "knock_restricted") and allowed:
            out["allowed_room_ids"] = allowed
    return out


def allowed_room_ids(join_rules: Any) -> list[str]:
    """The rooms whose members may join a restricted room."""
    if not isinstance(join_rules, dict) or not isinstance(join_rules.get("allow"), list):
        return []
    return [
        entry["room_id"]
        for entry in join_rules["allow"]
        if isinstance(entry, dict)
        and entry.get("type") == "m.room_membership"
        and isinstance(entry.get("room_id"), str)
    ]


@dataclass(frozen=True)
class PublicRoomsRequest:
    limit: int | None = None
    since: str | None = None
    server: str | None = None
    search_term: str | None = None
    room_types: tuple[str | None, ...] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


def _token(direction: str, row: RoomSummaryRow) -> str:
    raw = orjson.dumps([direction, row.joined_members, row.room_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_token(token: str) -> tuple[str, int, str]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 3
        and value[0] in ("n", "p")
        and type(value[1]) is int
        and 0 <= value[1] < 2**63
        and isinstance(value[2], str)
    ):
        return value[0], value[1], value[2]
    raise invalid_param("Unknown pagination token")


def remote_failure(server: str, exc: FederationError) -> ServiceError:
    """A refusal by another server passed on as it came (4xx); anything else is 502."""
    if isinstance(exc, RequestFailed) and 400 <= exc.status < 500:
        return ServiceError(exc.status, exc.errcode or "M_UNKNOWN", exc.error)
    return ServiceError(502, "M_UNKNOWN", f"Cannot get an answer from {server}: {exc}")


def _remote_query(request: PublicRoomsRequest) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The federation request for another server's list: a GET (query) without a
    filter, as older servers serve only that, a POST (body) with one."""
    has_filter = request.search_term is not None or request.room_types is not None
    if not has_filter:
        query: dict[str, Any] = {"include_all_networks": str(request.include_all_networks).lower()}
        if request.limit is not None:
            query["limit"] = str(request.limit)
        if request.since is not None:
            query["since"] = request.since
        if request.third_party_instance_id is not None:
            query["third_party_instance_id"] = request.third_party_instance_id
        return query, None
    body: dict[str, Any] = {"include_all_networks": request.include_all_networks}
    if request.limit is not None:
        body["limit"] = request.limit
    if request.since is not None:
        body["since"] = request.since
    if request.third_party_instance_id is not None:
        body["third_party_instance_id"] = request.third_party_instance_id
    room_filter: dict[str, Any] = {}
    if request.search_term is not None:
        room_filter["generic_search_term"] = request.search_term
    if request.room_types is not None:
        room_filter["room_types"] = list(request.room_types)
    body["filter"] = room_filter
    return {}, body


def _clean_remote_page(answer: Any) -> dict[str, Any]:
    """Another server's page, keeping only entries a client can use (a room id and a
    member count at least) and the fields the spec defines at the top."""
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        return {"chunk": []}
    chunk = [
        room
        for room in answer["chunk"]
        if isinstance(room, dict)
        and isinstance(room.get("room_id"), str)
        and type(room.get("num_joined_members")) is int
    ]
    out: dict[str, Any] = {"chunk": chunk}
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            out[key] = answer[key]
    if type(answer.get("total_room_count_estimate")) is int:
        out["total_room_count_estimate"] = answer["total_room_count_estimate"]
    return out


class RoomDirectory:
    def __init__(
        self,
        db: Database,
        replicas: Replicas,
        events: EventWriter,
        event_cache: EventCache,
        federation_client: FederationClient,
        server_name: str,
    ) -> None:
        self.db = db
        self.replicas = replicas
        self.events = events
        self.event_cache = event_cache
        self.federation_client = federation_client
        self.server_name = server_name

    # Aliases

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        if alias_server(alias) != self.server_name:
            raise invalid_param(f"Aliases must be on this server ({self.server_name})")
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                raise not_found(f"Unknown room {room_id}")
            member = await memberships.get_membership(conn, room_id, requester.user_id)
            if not requester.is_admin and (member is None or member.membership != "join"):
                raise forbidden("You must be in the room to give it an alias")
            if not await aliases.create_alias(conn, alias, room_id, requester.user_id, now_ms()):
                raise ServiceError(409, "M_ROOM_IN_USE", f"{alias} already exists")

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """The room an alias names, and servers that can help to join it."""
        if alias_server(alias) != self.server_name:
            raise not_found(f"Cannot resolve {alias}: remote aliases need federation")
        async with self.db.pool.connection() as conn:
            room_id = await aliases.get_alias(conn, alias)
            if room_id is None:
                raise not_found(f"Room alias {alias} not found")
            joined = await memberships.members_of_room(conn, room_id)
        others = {server_name_of(m.user_id, "@") for m in joined} - {self.server_name, None}
        return room_id, [self.server_name, *sorted(s for s in others if s)]

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        """Allowed to the alias's creator, server admins, and whoever may change the
        room's canonical alias; the alias then also leaves that event, if it can."""
        alias_server(alias)
        async with self.db.pool.connection() as conn:
            row = await aliases.get_alias_row(conn, alias)
            if row is None:
                raise not_found(f"Room alias {alias} not found")
            room_id, creator = row
            allowed = (
                requester.is_admin
                or creator == requester.user_id
                or await may_send_state(
                    conn, self.event_cache, room_id, requester.user_id, CANONICAL_ALIAS
                )
            )
            if not allowed:
                raise forbidden("You may not delete this alias")
            await aliases.delete_alias(conn, alias)
        await self._drop_from_canonical_alias(requester.user_id, room_id, alias)

    async def _drop_from_canonical_alias(self, user_id: str, room_id: str, alias: str) -> None:
        try:
            async with self.events.writer(room_id) as writer:
                current = await current_state_events(
                    writer.conn, writer.cache, room_id, [(CANONICAL_ALIAS, "")]
                )
                event = current.get((CANONICAL_ALIAS, ""))
                if event is None:
                    return
                content = dict(event.content)
                alt = content.get("alt_aliases")
                changed = False
                if content.get("alias") == alias:
                    del content["alias"]
                    changed = True
                if isinstance(alt, list) and alias in alt:
                    content["alt_aliases"] = [a for a in alt if a != alias]
                    changed = True
                if changed:
                    await writer.append(CANONICAL_ALIAS, user_id, content, state_key="")
        except EventNotAllowed:
            # The spec asks for success even when the event cannot be updated.
            return

    async def local_aliases(self, requester: Requester, room_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            member = await memberships.get_membership(conn, room_id, requester.user_id)
            if not requester.is_admin and (member is None or member.membership != "join"):
                visibility = await current_state_events(
                    conn, self.event_cache, room_id, [("m.room.history_visibility", "")]
                )
                event = visibility.get(("m.room.history_visibility", ""))
                if event is None or event.content.get("history_visibility") != "world_readable":
                    raise forbidden("You are not in this room")
            return await aliases.aliases_of_room(conn, room_id)

    # The published room list

    async def visibility(self, room_id: str) -> str:
        async with self.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return "public" if room.is_public else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                raise not_found(f"Unknown room {room_id}")
            if not requester.is_admin:
                member = await memberships.get_membership(conn, room_id, requester.user_id)
                if member is None or member.membership != "join":
                    raise forbidden("You are not in this room")
                power = await current_state_events(conn, self.event_cache, room_id, _POWER_KEYS)
                create, levels = power.get(_POWER_KEYS[0]), power.get(_POWER_KEYS[1])
                if user_level(requester.user_id, create, levels) < named_level(
                    levels, "state_default"
                ):
                    raise forbidden("You need the power to change state to publish the room")
            await aliases.set_room_public(conn, room_id, visibility == "public")

    async def remote_public_rooms(self, request: PublicRoomsRequest) -> dict[str, Any]:
        """Another server's published rooms, asked over federation."""
        server = request.server or ""
        if not is_valid_server_name(server):
            raise invalid_param(f"{server!r} is not a server name")
        if request.include_all_networks and request.third_party_instance_id is not None:
            raise invalid_param("third_party_instance_id needs include_all_networks false")
        if request.limit is not None and request.limit <= 0:
            raise invalid_param("limit must be positive")
        query, body = _remote_query(request)
        try:
            answer = await self.federation_client.request(
                "GET" if body is None else "POST",
                server,
                PUBLIC_ROOMS_PATH,
                query=query,
                content=body,
                time_limit=REMOTE_DIRECTORY_TIMEOUT,
                max_size=REMOTE_DIRECTORY_MAX_BYTES,
            )
        except FederationError as exc:
            raise remote_failure(server, exc) from None
        return _clean_remote_page(answer)

    async def public_rooms(self, request: PublicRoomsRequest) -> dict[str, Any]:
        if request.server is not None and request.server != self.server_name:
            return await self.remote_public_rooms(request)
        if request.include_all_networks and request.third_party_instance_id is not None:
            raise invalid_param("third_party_instance_id needs include_all_networks false")
        if request.third_party_instance_id is not None:
            # No application service bridges any third-party network here.
            return {"chunk": [], "total_room_count_estimate": 0}
        limit = request.limit if request.limit is not None else DEFAULT_PUBLIC_ROOMS_LIMIT
        if limit <= 0:
            raise invalid_param("limit must be positive")
        limit = min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        types = request.room_types
        directory_filter = DirectoryFilter(
            search_term=(request.search_term or "").strip().lower() or None,
            room_types=None if types is None else tuple(t for t in types if t is not None),
            untyped=types is not None and None in types,
        )
        after = before = None
        if request.since:
            direction, joined, room_id = _parse_token(request.since)
            if direction == "n":
                after = (joined, room_id)
            else:
                before = (joined, room_id)
        # A second's staleness is fine for the list: a recent replica may answer.
        async with self.replicas.pool_for_recent().connection() as conn:
            rows = await published_rooms(
                conn, directory_filter, limit + 1, after=after, before=before
            )
            total = await count_published(conn, directory_filter)
        more = len(rows) > limit
        if before is not None:
            rows = rows[-limit:] if more else rows
        else:
            rows = rows[:limit]
        out: dict[str, Any] = {
            "chunk": [room_summary(r) for r in rows],
            "total_room_count_estimate": total,
        }
        if rows:
            # Forward pages have earlier rooms when they began at a token; backward
            # pages always have later ones (the page the token came from).
            if (before is None and more) or before is not None:
                out["next_batch"] = _token("n", rows[-1])
            if (before is not None and more) or after is not None:
                out["prev_batch"] = _token("p", rows[0])
        return out
