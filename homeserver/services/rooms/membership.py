"""Joining, leaving, inviting, kicking, banning and knocking, for local rooms.

The auth rules have the last word on every change; the checks here exist to give
clients the spec's precise errors before an event is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from federation.events import AUTHORISING_USER, CREATE_KEY, MEMBER
from federation.identifiers import server_name_of
from homeserver.services.core.errors import ServiceError, forbidden, not_found
from homeserver.services.push.rules import PushRuleService
from homeserver.services.remote.joins import FederationJoins
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.restricted import join_authoriser
from homeserver.services.rooms.writer import EventNotAllowed, EventWriter, UnknownRoom
from homeserver.storage.accounts import accounts, profiles
from homeserver.storage.admin import rooms as admin_rooms
from homeserver.storage.core.pool import Database
from homeserver.storage.directory import aliases
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import memberships, rooms, state

log = logging.getLogger(__name__)

# Member event keys a client's join body may not set: the server decides them (the
# authorising user of a restricted join is vouched for by this server's signature).
_SERVER_KEYS = frozenset({"membership", "reason", "third_party_signed", AUTHORISING_USER})


async def member_profile(db: Database, user_id: str) -> dict[str, str]:
    """The displayname/avatar_url a member event of this user carries."""
    async with db.pool.connection() as conn:
        profile = await profiles.get_profile(conn, user_id)
    out: dict[str, str] = {}
    if profile is not None:
        name, avatar = profile
        if name:
            out["displayname"] = name
        if avatar:
            out["avatar_url"] = avatar
    return out


class MembershipService:
    def __init__(
        self,
        db: Database,
        events: EventWriter,
        event_cache: EventCache,
        remote: FederationJoins,
        push_rules: PushRuleService,
        server_name: str,
    ) -> None:
        self.db = db
        self.events = events
        self.event_cache = event_cache
        self.remote = remote
        self.push_rules = push_rules
        self.server_name = server_name

    async def resolve_room(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            async with self.db.pool.connection() as conn:
                room_id = await aliases.get_alias(conn, room_id_or_alias)
            if room_id is None:
                raise not_found(f"Room alias {room_id_or_alias} not found")
            return room_id
        if not room_id_or_alias.startswith("!"):
            raise ServiceError(400, "M_INVALID_PARAM", "Expected a room id or alias")
        return room_id_or_alias

    async def joined_rooms(self, user_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            rows = await memberships.rooms_of_user(conn, user_id)
        return [row.room_id for row in rows]

    async def mutual_rooms(
        self, user_id: str, other: str, after: str | None, limit: int
    ) -> tuple[list[str], int, str | None]:
        """Rooms both users are joined to, in room id order from after `after`: one page,
        the total count, and the token of the next page (MSC2666)."""
        mine = set(await self.joined_rooms(user_id))
        shared = sorted(mine.intersection(await self.joined_rooms(other)))
        start = 0
        if after is not None:
            start = next((i for i, room in enumerate(shared) if room > after), len(shared))
        page = shared[start : start + limit]
        more = start + limit < len(shared)
        return page, len(shared), page[-1] if more else None

    async def announce_profile(self, user_id: str, profile: Mapping[str, str]) -> None:
        """Re-send the user's join event with their new profile in every joined room."""
        for room_id in await self.joined_rooms(user_id):
            try:
                await self._change(room_id, user_id, user_id, "join", None, profile)
            except ServiceError as exc:
                log.warning("profile not announced in %s: %s", room_id, exc.message)

    async def current(self, room_id: str, user_id: str) -> str | None:
        async with self.db.pool.connection() as conn:
            row = await memberships.get_membership(conn, room_id, user_id)
        return row.membership if row else None

    async def _change(
        self,
        room_id: str,
        sender: str,
        target: str,
        membership: str,
        reason: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The new member event's id, or the current one's when it would only repeat it
        (same membership, sender and content)."""
        content: dict[str, Any] = {"membership": membership, **(extra or {})}
        if reason is not None:
            content["reason"] = reason
        try:
            async with self.events.writer(room_id) as writer:
                unchanged = await writer.unchanged(MEMBER, target, sender, content)
                if unchanged is not None:
                    return unchanged
                if membership != "invite" or self._is_local(target):
                    persisted = await writer.append(MEMBER, sender, content, state_key=target)
                    return persisted.event.event_id
                event, prev_ids, new_key = await writer.prepare(
                    MEMBER, sender, content, state_key=target
                )
                event = await self.remote.invite(writer, event)
                await writer.persist(event, prev_ids=prev_ids, new_key=new_key)
                return event.event_id
        except UnknownRoom:
            raise not_found(f"Unknown room {room_id}") from None
        except EventNotAllowed as exc:
            raise forbidden(str(exc)) from None

    async def _known_room(self, room_id: str) -> None:
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                raise not_found(f"Unknown room {room_id}")

    async def _holds_state(self, room_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            return await fed_store.has_state(conn, room_id)

    async def join(
        self,
        room_id: str,
        user_id: str,
        reason: str | None = None,
        servers: Sequence[str] = (),
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Join locally when one of our users is in the room, else through one of
        `servers` (then the server that invited the user, the room's creator's, and the
        servers we last knew in it); locally too when no other server is known. The
        client's own `fields` go into the member event (over the global profile), but
        for the keys the server decides."""
        async with self.db.pool.connection() as conn:
            if await admin_rooms.blocked_by(conn, room_id) is not None:
                raise forbidden("This room has been blocked on this server")
        current = await self.current(room_id, user_id)
        if current == "ban":
            raise forbidden("You are banned from this room")
        profile: dict[str, Any] = dict(await member_profile(self.db, user_id))
        profile.update((k, v) for k, v in (fields or {}).items() if k not in _SERVER_KEYS)
        holds_state = await self._holds_state(room_id)
        async with self.db.pool.connection() as conn:
            row = await memberships.get_membership(conn, room_id, user_id)
            # The state we hold is current only while one of our users is in the room.
            known_servers = await room_servers.servers_in_room(conn, room_id)
        via = list(servers)
        if row is not None and row.membership == "invite":
            via.append(server_name_of(row.sender, "@") or "")
        via.append(server_name_of(room_id, "!") or "")
        via.extend(sorted(known_servers - {self.server_name}))
        remote = [s for s in via if s and s != self.server_name]
        if not holds_state or (self.server_name not in known_servers and remote):
            if reason is not None:
                profile["reason"] = reason
            await self.remote.join(room_id, user_id, via, profile)
        else:
            await self._known_room(room_id)
            profile.update(await self._vouched(room_id, user_id))
            await self._change(room_id, user_id, user_id, "join", reason, profile)
        if current != "join":
            await self._carry_over(room_id, user_id)

    async def _carry_over(self, room_id: str, user_id: str) -> None:
        """Joining a room that replaces another: the user's push rules for the old room
        apply to the new one too."""
        async with self.db.pool.connection() as conn:
            ids = await state.get_current_state(conn, room_id, [CREATE_KEY])
            found = await load_events(conn, self.event_cache, ids.values())
        create = found.get(ids.get(CREATE_KEY, ""))
        predecessor = create.content.get("predecessor") if create is not None else None
        old_room_id = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        if isinstance(old_room_id, str):
            await self.push_rules.copy_room_rules(user_id, old_room_id, room_id)

    async def _vouched(self, room_id: str, user_id: str) -> dict[str, str]:
        """The authorising user's key of a restricted join, as the resident server."""
        try:
            async with self.db.pool.connection() as conn:
                authoriser = await join_authoriser(
                    conn, self.event_cache, room_id, user_id, self.server_name
                )
        except ServiceError as exc:
            raise forbidden(exc.message) from None
        return {} if authoriser is None else {AUTHORISING_USER: authoriser}

    async def leave(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        current = await self.current(room_id, user_id)
        if current is None or current == "leave":
            await self._known_room(room_id)
            raise forbidden("You are not in this room")
        if not await self._holds_state(room_id):
            await self.remote.leave_unknown_room(room_id, user_id, reason)
            return
        await self._change(room_id, user_id, user_id, "leave", reason)

    async def invite(
        self, room_id: str, sender: str, target: str, reason: str | None = None
    ) -> str:
        self._check_user_id(target)
        current = await self.current(room_id, target)
        if current == "ban":
            raise forbidden(f"{target} is banned from the room")
        if current == "join":
            raise forbidden(f"{target} is already in the room")
        if self._is_local(target) and await self._deactivated(target):
            raise forbidden(f"{target} has been deactivated")
        profile = await member_profile(self.db, target) if self._is_local(target) else {}
        return await self._change(room_id, sender, target, "invite", reason, profile)

    async def kick(self, room_id: str, sender: str, target: str, reason: str | None = None) -> str:
        self._check_user_id(target)
        current = await self.current(room_id, target)
        if current not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        return await self._change(room_id, sender, target, "leave", reason)

    async def ban(self, room_id: str, sender: str, target: str, reason: str | None = None) -> str:
        self._check_user_id(target)
        return await self._change(room_id, sender, target, "ban", reason)

    async def unban(self, room_id: str, sender: str, target: str, reason: str | None = None) -> str:
        self._check_user_id(target)
        if await self.current(room_id, target) != "ban":
            raise forbidden(f"{target} is not banned")
        return await self._change(room_id, sender, target, "leave", reason)

    async def knock(
        self,
        room_id: str,
        user_id: str,
        reason: str | None = None,
        servers: Sequence[str] = (),
    ) -> str:
        """Knock locally when we hold the room, else through one of `servers` (and the
        room id's server)."""
        current = await self.current(room_id, user_id)
        if current in ("join", "invite", "ban"):
            raise forbidden(f"Cannot knock while your membership is {current}")
        profile: dict[str, Any] = dict(await member_profile(self.db, user_id))
        if not await self._holds_state(room_id):
            via = [*servers, server_name_of(room_id, "!") or ""]
            if reason is not None:
                profile["reason"] = reason
            return (await self.remote.knock(room_id, user_id, via, profile)).event.event_id
        await self._known_room(room_id)
        return await self._change(room_id, user_id, user_id, "knock", reason, profile)

    async def forget(self, room_id: str, user_id: str) -> None:
        async with self.db.pool.connection() as conn:
            row = await memberships.get_membership(conn, room_id, user_id)
            if row is None:
                raise not_found("You have never been in this room")
            if row.membership in ("join", "invite", "knock"):
                raise ServiceError(400, "M_UNKNOWN", "Leave the room before forgetting it")
            await memberships.forget_room(conn, room_id, user_id)

    async def _deactivated(self, user_id: str) -> bool:
        async with self.db.pool.connection() as conn:
            info = await accounts.get_login_info(conn, user_id)
        return info is not None and info[1]

    def _is_local(self, user_id: str) -> bool:
        return server_name_of(user_id, "@") == self.server_name

    @staticmethod
    def _check_user_id(user_id: str) -> None:
        if server_name_of(user_id, "@") is None:
            raise ServiceError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user id")
