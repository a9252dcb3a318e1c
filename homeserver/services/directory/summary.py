"""Room summaries (MSC3266, `/v1/room_summary`): what a client shows of a room before
joining it, such as a room named in a link or a space's room to knock on.

A room is summarised to whoever may learn about it anyway: anyone when it is public,
knockable or world readable, its members and invitees, and (restricted rooms) the
members of a room it lets in. Rooms our server is not in are asked of the `via`
servers through federation `/hierarchy`, whose answers carry the same fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.identifiers import server_name_of
from federation.types import JsonDict
from homeserver.services.core.errors import invalid_param, not_found
from homeserver.services.directory.hierarchy import HierarchyService
from homeserver.services.directory.rooms import room_summary
from homeserver.services.remote.joins import FederationJoins
from homeserver.storage.core.pool import Database
from homeserver.storage.directory import aliases
from homeserver.storage.directory.public_rooms import summaries
from homeserver.storage.rooms import memberships

_OPEN_RULES = frozenset({"public", "knock", "knock_restricted"})
_MEMBERS = frozenset({"join", "invite", "knock"})


def _allowed_rooms(entry: JsonDict) -> list[str]:
    allowed = entry.get("allowed_room_ids")
    if entry.get("join_rule") not in ("restricted", "knock_restricted"):
        return []
    return [r for r in allowed if isinstance(r, str)] if isinstance(allowed, list) else []


class RoomSummaryService:
    def __init__(
        self,
        db: Database,
        hierarchy: HierarchyService,
        joins: FederationJoins,
        server_name: str,
    ) -> None:
        self.db = db
        self.hierarchy = hierarchy
        self.joins = joins
        self.server_name = server_name

    async def summary(
        self, user_id: str | None, room_id_or_alias: str, via: Sequence[str]
    ) -> JsonDict:
        """The room's summary, with the user's membership when one asks; 404 when the
        room is unknown or not one they may see (the two look the same)."""
        room_id, servers = await self._resolve(room_id_or_alias)
        entry = await self._local(room_id)
        if entry is None:
            entry = await self._remote(room_id, [*via, *servers])
        membership = None
        if user_id is not None:
            async with self.db.pool.connection() as conn:
                row = await memberships.get_membership(conn, room_id, user_id)
            membership = row.membership if row else None
        if entry is None or not await self._may_see(entry, user_id, membership):
            raise not_found("Room not found")
        if user_id is not None:
            entry["membership"] = membership or "leave"
        return entry

    async def _resolve(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room id, and servers an alias's directory says can help."""
        if room_id_or_alias.startswith("!"):
            origin = server_name_of(room_id_or_alias, "!")
            return room_id_or_alias, [origin] if origin else []
        if not room_id_or_alias.startswith("#") or ":" not in room_id_or_alias:
            raise invalid_param("Expected a room ID or a room alias")
        if room_id_or_alias.split(":", 1)[1] != self.server_name:
            return await self.joins.query_alias(room_id_or_alias)
        async with self.db.pool.connection() as conn:
            room_id = await aliases.get_alias(conn, room_id_or_alias)
        if room_id is None:
            raise not_found("Room not found")
        return room_id, []

    async def _local(self, room_id: str) -> JsonDict | None:
        async with self.db.pool.connection() as conn:
            if not await self.hierarchy.is_local(conn, room_id):
                return None
            row = (await summaries(conn, [room_id])).get(room_id)
        return room_summary(row, extended=True) if row is not None else None

    async def _remote(self, room_id: str, via: Sequence[str]) -> JsonDict | None:
        servers = list(dict.fromkeys(v for v in via if v and v != self.server_name))
        if not servers:
            return None
        answer = await self.hierarchy.ask_remote(room_id, servers, False)
        if answer is None:
            return None
        return {k: v for k, v in answer["room"].items() if k != "children_state"}

    async def _may_see(self, entry: JsonDict, user_id: str | None, membership: str | None) -> bool:
        if entry.get("world_readable") is True or entry.get("join_rule") in _OPEN_RULES:
            return True
        if user_id is None:
            return False
        if membership in _MEMBERS:
            return True
        allowed = _allowed_rooms(entry)
        if not allowed:
            return False
        async with self.db.pool.connection() as conn:
            joined = await memberships.rooms_of_user(conn, user_id)
        return bool({row.room_id for row in joined} & set(allowed))
