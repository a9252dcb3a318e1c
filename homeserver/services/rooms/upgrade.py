"""Room upgrades: a new room of another version that continues an old one.

The new room gets a create event naming its predecessor, the upgrader's join, the
old room's power levels, its other transferable state and its bans, and the local
aliases; the upgrader's push rules for the old room are copied for the new one (other
members' are when they join it).
The old room then gets a tombstone pointing at the new room, loses its published
status and canonical alias, and (where the upgrader may) has its power levels raised
so that ordinary members can no longer talk or invite there, as the spec suggests.
The new room is committed before the old room is touched: if the second step fails
the old room is unchanged and the new room is merely unused.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from federation.canonical_json import CanonicalJsonError
from federation.events import CREATE_KEY, MEMBER, POWER_LEVELS_KEY, Event, StateKey
from federation.identifiers import is_user_id
from federation.power_levels import (
    creators,
    parse_level,
    required_level_in_state,
    user_level_in_state,
)
from federation.redaction import redact
from federation.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import ServiceError, bad_json, forbidden, not_found
from homeserver.services.directory.rooms import CANONICAL_ALIAS
from homeserver.services.push.rules import PushRuleService
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.membership import member_profile
from homeserver.services.rooms.writer import EventNotAllowed, EventWriter, RoomWriter, UnknownRoom
from homeserver.storage.core.pool import Database
from homeserver.storage.directory import aliases
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, rooms, state

TOMBSTONE = "m.room.tombstone"
# Copied into the new room: state that describes the room rather than its members.
TRANSFERABLE: tuple[StateKey, ...] = (
    ("m.room.join_rules", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
    ("m.room.name", ""),
    ("m.room.topic", ""),
    ("m.room.avatar", ""),
    ("m.room.encryption", ""),
    ("m.room.server_acl", ""),
    ("m.room.related_groups", ""),
    (CANONICAL_ALIAS, ""),
)
# Space structure is copied for every state key.
TRANSFERABLE_TYPES = ("m.space.child", "m.space.parent")
_LEVEL_KEYS = ("ban", "kick", "redact", "invite", "events_default", "state_default")
# The level the old room's power levels require to talk and invite after the upgrade.
RESTRICTED_LEVEL = 50


def _levels(value: Any, room_version: RoomVersion) -> dict[str, int]:
    """A map of power levels with every value an integer (v10+ require it)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, raw in value.items():
        level = parse_level(raw, room_version)
        if isinstance(key, str) and level is not None:
            out[key] = level
    return out


def normalised_power_levels(event: Event | None) -> dict[str, Any]:
    """The power levels content with only well-formed integer levels, valid in any
    room version."""
    if event is None:
        return {}
    rv, content = event.room_version, event.content
    out: dict[str, Any] = {}
    for key in (*_LEVEL_KEYS, "users_default"):
        level = parse_level(content.get(key), rv)
        if level is not None:
            out[key] = level
    for key in ("users", "events", "notifications"):
        if key in content:
            out[key] = _levels(content[key], rv)
    return out


def _additional_creators(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(is_user_id(u) for u in value):
        raise bad_json("additional_creators must be a list of user ids")
    return tuple(dict.fromkeys(value))


class RoomUpgrader:
    def __init__(
        self,
        db: Database,
        events: EventWriter,
        event_cache: EventCache,
        push_rules: PushRuleService,
        server_name: str,
    ) -> None:
        self.db = db
        self.events = events
        self.event_cache = event_cache
        self.push_rules = push_rules
        self.server_name = server_name

    async def upgrade(
        self,
        requester: Requester,
        room_id: str,
        new_version: str,
        additional_creators: Any = None,
    ) -> str:
        """The id of the replacement room."""
        try:
            room_version = get_room_version(new_version)
        except UnsupportedRoomVersion:
            raise ServiceError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {new_version} is not supported"
            ) from None
        extra_creators = _additional_creators(additional_creators)
        user_id = requester.user_id
        old_state = await self._old_state(room_id, user_id)
        if user_level_in_state(user_id, old_state) < required_level_in_state(
            TOMBSTONE, "", old_state
        ):
            raise forbidden("You need the power to send m.room.tombstone to upgrade the room")
        new_room_id = await self._create_successor(
            user_id, room_id, room_version, extra_creators, old_state
        )
        await self._retire(user_id, room_id, new_room_id, old_state)
        await self.push_rules.copy_room_rules(user_id, room_id, new_room_id)
        return new_room_id

    async def _old_state(self, room_id: str, user_id: str) -> dict[StateKey, Event]:
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                raise not_found(f"Unknown room {room_id}")
            member = await memberships.get_membership(conn, room_id, user_id)
            if member is None or member.membership != "join":
                raise forbidden("You are not in this room")
            ids = await state.get_current_state(
                conn, room_id, [CREATE_KEY, POWER_LEVELS_KEY, *TRANSFERABLE]
            )
            for event_type in TRANSFERABLE_TYPES:
                ids.update(await state.get_current_state_of_type(conn, room_id, event_type))
            # Bans carry over: a banned user cannot walk into the replacement room.
            for ban in await memberships.members_of_room(conn, room_id, ("ban",)):
                ids[(MEMBER, ban.user_id)] = ban.event_id
            loaded = await load_events(conn, self.event_cache, ids.values())
            redacted = {
                eid
                for eid, row in (await event_store.get_events(conn, loaded)).items()
                if row.redacted_by
            }
        found: dict[StateKey, Event] = {}
        for key, eid in ids.items():
            event = loaded.get(eid)
            if event is not None and eid in redacted:
                # Copy what the room sees, not the content a redaction removed.
                event = Event(redact(event.pdu, event.room_version), event.room_version, eid)
            if event is not None:
                found[key] = event
        return found

    def _new_power_levels(
        self,
        user_id: str,
        room_version: RoomVersion,
        extra_creators: Sequence[str],
        old_state: Mapping[StateKey, Event],
    ) -> dict[str, Any]:
        content = normalised_power_levels(old_state.get(POWER_LEVELS_KEY))
        users: dict[str, int] = content.setdefault("users", {})
        if room_version.privileged_creators:
            # v12+ creators outrank every level and must not be listed in `users`.
            for creator in (user_id, *extra_creators):
                users.pop(creator, None)
            return content
        # Old v12 creators held power no number expresses; keep them on top here.
        old_create = old_state.get(CREATE_KEY)
        if old_create is not None and old_create.room_version.privileged_creators:
            top = max([100, *users.values()])
            for creator in creators(old_create):
                users[creator] = top
        return content

    async def _create_successor(
        self,
        user_id: str,
        old_room_id: str,
        room_version: RoomVersion,
        extra_creators: Sequence[str],
        old_state: Mapping[StateKey, Event],
    ) -> str:
        old_create = old_state.get(CREATE_KEY)
        old_create_content = old_create.content if old_create is not None else {}
        async with self.db.pool.connection() as conn:
            extremities = await rooms.get_forward_extremities(conn, old_room_id)
            old_room = await rooms.get_room(conn, old_room_id)
        predecessor = {"room_id": old_room_id}
        if extremities:
            predecessor["event_id"] = extremities[0][0]
        create: dict[str, Any] = {"room_version": room_version.identifier}
        create["predecessor"] = predecessor
        if not room_version.msc2175_implicit_room_creator:
            create["creator"] = user_id
        for key in ("type", "m.federate"):
            if key in old_create_content:
                create[key] = old_create_content[key]
        if room_version.privileged_creators and extra_creators:
            create["additional_creators"] = list(extra_creators)
        legacy_id = None
        if not room_version.room_id_from_create_event:
            legacy_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        power_levels = self._new_power_levels(user_id, room_version, extra_creators, old_state)
        profile = await member_profile(self.db, user_id)
        try:
            async with self.events.new_room(room_version, user_id, create, legacy_id) as writer:
                await writer.append(
                    "m.room.member", user_id, {"membership": "join", **profile}, state_key=user_id
                )
                await self._copy_state(writer, user_id, power_levels, old_state)
                await aliases.move_aliases(writer.conn, old_room_id, writer.room_id)
                if old_room is not None and old_room.is_public:
                    await aliases.set_room_public(writer.conn, writer.room_id, True)
                return writer.room_id
        except EventNotAllowed as exc:
            raise forbidden(f"Cannot create the replacement room: {exc}") from None

    async def _copy_state(
        self,
        writer: RoomWriter,
        user_id: str,
        power_levels: dict[str, Any],
        old_state: Mapping[StateKey, Event],
    ) -> None:
        """Power levels first, raised for the upgrader where they could not send all
        the copied state otherwise, then the state, then the real power levels."""
        copied = [
            event
            for key, event in old_state.items()
            if key not in (CREATE_KEY, POWER_LEVELS_KEY) and event.content
        ]
        temporary = power_levels
        if not writer.room_version.privileged_creators:
            events_levels = power_levels.get("events", {})
            state_default = power_levels.get("state_default", 50)
            needed = max(
                events_levels.get(event_type, state_default)
                for event_type in {"m.room.power_levels", *(e.type for e in copied)}
                if event_type != MEMBER
            )
            if any(e.type == MEMBER for e in copied):
                needed = max(needed, power_levels.get("ban", 50))
            users = power_levels.get("users", {})
            if users.get(user_id, power_levels.get("users_default", 0)) < needed:
                temporary = {**power_levels, "users": {**users, user_id: needed}}
        await writer.append("m.room.power_levels", user_id, temporary, state_key="")
        for event in copied:
            try:
                await writer.append(event.type, user_id, event.content, state_key=event.state_key)
            except (EventNotAllowed, CanonicalJsonError):
                # Not valid in the new room version: the room is better off without it.
                continue
        if temporary is not power_levels:
            await writer.append("m.room.power_levels", user_id, power_levels, state_key="")

    async def _retire(
        self, user_id: str, room_id: str, new_room_id: str, old_state: Mapping[StateKey, Event]
    ) -> None:
        try:
            async with self.events.writer(room_id) as writer:
                await writer.append(
                    TOMBSTONE,
                    user_id,
                    {"body": "This room has been replaced", "replacement_room": new_room_id},
                    state_key="",
                )
                await aliases.set_room_public(writer.conn, room_id, False)
                if old_state.get((CANONICAL_ALIAS, ""), None) is not None:
                    await self._best_effort(writer, user_id, CANONICAL_ALIAS, {})
                await self._best_effort(
                    writer, user_id, "m.room.power_levels", self._restricted(old_state)
                )
        except UnknownRoom:
            raise not_found(f"Unknown room {room_id}") from None
        except EventNotAllowed as exc:
            raise forbidden(str(exc)) from None

    @staticmethod
    def _restricted(old_state: Mapping[StateKey, Event]) -> dict[str, Any]:
        old = old_state.get(POWER_LEVELS_KEY)
        content: dict[str, Any] = dict(old.content) if old is not None else {}
        normalised = normalised_power_levels(old)
        floor = max(RESTRICTED_LEVEL, normalised.get("users_default", 0) + 1)
        for key, default in (("events_default", 0), ("invite", 0)):
            content[key] = max(floor, normalised.get(key, default))
        return content

    @staticmethod
    async def _best_effort(
        writer: RoomWriter, user_id: str, event_type: str, content: dict[str, Any]
    ) -> None:
        """Send a state event the upgrade would like but does not need."""
        try:
            await writer.append(event_type, user_id, content, state_key="")
        except EventNotAllowed:
            return
