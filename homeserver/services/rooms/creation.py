"""Creating rooms: presets, initial state and invites, committed together."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.identifiers import server_name_of
from federation.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, forbidden
from homeserver.services.remote.joins import FederationJoins
from homeserver.services.rooms.membership import member_profile
from homeserver.services.rooms.server_acl import check_own_acl
from homeserver.services.rooms.writer import (
    EventNotAllowed,
    EventWriter,
    PersistedEvent,
    RoomWriter,
)
from homeserver.storage.core.pool import Database
from homeserver.storage.directory import aliases

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")


@dataclass(frozen=True)
class CreateRoomRequest:
    """A validated `createRoom` body."""

    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: tuple[str, ...] = ()
    room_version: str | None = None
    creation_content: Mapping[str, Any] | None = None
    initial_state: tuple[Mapping[str, Any], ...] = ()
    preset: str | None = None
    is_direct: bool = False
    power_level_content_override: Mapping[str, Any] | None = None


_bad = bad_json


def parse_create_room(body: Mapping[str, Any]) -> CreateRoomRequest:
    def opt(name: str, kind: type) -> Any:
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise _bad(f"{name} must be a {kind.__name__}")
        return value

    visibility = opt("visibility", str) or "private"
    if visibility not in ("public", "private"):
        raise _bad("visibility must be 'public' or 'private'")
    preset = opt("preset", str)
    if preset is not None and preset not in PRESETS:
        raise _bad(f"preset must be one of {', '.join(PRESETS)}")
    invite = opt("invite", list) or []
    if not all(isinstance(u, str) and u.startswith("@") and ":" in u for u in invite):
        raise _bad("invite must be a list of user ids")
    initial_state = opt("initial_state", list) or []
    for item in initial_state:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("state_key", ""), str)
            and isinstance(item.get("content"), dict)
        ):
            raise _bad("initial_state entries need a type, a string state_key and a content")
    if opt("invite_3pid", list):
        raise ServiceError(400, "M_UNRECOGNIZED", "Third-party invites are not supported")
    alias_name = opt("room_alias_name", str)
    if alias_name is not None and (not alias_name or ":" in alias_name or "#" in alias_name):
        raise ServiceError(400, "M_INVALID_PARAM", "room_alias_name must be a bare localpart")
    is_direct = body.get("is_direct", False)
    if not isinstance(is_direct, bool):
        raise _bad("is_direct must be a boolean")
    return CreateRoomRequest(
        visibility=visibility,
        room_alias_name=alias_name,
        name=opt("name", str),
        topic=opt("topic", str),
        invite=tuple(invite),
        room_version=opt("room_version", str),
        creation_content=opt("creation_content", dict),
        initial_state=tuple(initial_state),
        preset=preset,
        is_direct=is_direct,
        power_level_content_override=opt("power_level_content_override", dict),
    )


def _default_power_levels(
    room_version: RoomVersion, creator: str, trusted: list[str]
) -> dict[str, Any]:
    users: dict[str, int] = {}
    if not room_version.privileged_creators:
        users[creator] = 100
        for user_id in trusted:
            users[user_id] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
    }


def topic_content(topic: str) -> dict[str, Any]:
    """A plain-text topic, with its `m.topic` text block (spec v1.15) for rich clients."""
    return {"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}


class RoomCreator:
    def __init__(
        self,
        db: Database,
        events: EventWriter,
        remote: FederationJoins,
        server_name: str,
        default_version: str,
    ) -> None:
        self.db = db
        self.events = events
        self.remote = remote
        self.server_name = server_name
        self.default_version = default_version

    async def create(
        self, user_id: str, request: CreateRoomRequest
    ) -> tuple[str, list[PersistedEvent]]:
        try:
            room_version = get_room_version(request.room_version or self.default_version)
        except UnsupportedRoomVersion as exc:
            raise ServiceError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {exc.identifier} is not supported"
            ) from None
        preset = request.preset or (
            "public_chat" if request.visibility == "public" else "private_chat"
        )
        trusted = list(request.invite) if preset == "trusted_private_chat" else []
        for item in request.initial_state:
            state_key = item.get("state_key", "")
            check_own_acl(item["type"], state_key, item["content"], self.server_name)

        alias = None
        if request.room_alias_name is not None:
            alias = f"#{request.room_alias_name}:{self.server_name}"
            async with self.db.pool.connection() as conn:
                if await aliases.get_alias(conn, alias) is not None:
                    raise ServiceError(400, "M_ROOM_IN_USE", f"{alias} is already in use")

        create_content: dict[str, Any] = dict(request.creation_content or {})
        create_content["room_version"] = room_version.identifier
        if not room_version.msc2175_implicit_room_creator:
            create_content["creator"] = user_id
        if room_version.privileged_creators and trusted:
            extra = create_content.get("additional_creators", [])
            if not isinstance(extra, list):
                raise _bad("additional_creators must be a list of user ids")
            create_content["additional_creators"] = sorted({*extra, *trusted})
        legacy_room_id = None
        if not room_version.room_id_from_create_event:
            legacy_room_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"

        profile = await member_profile(self.db, user_id)
        try:
            async with self.events.new_room(
                room_version, user_id, create_content, legacy_room_id
            ) as writer:
                await self._initial_events(
                    writer, user_id, request, preset, trusted, alias, profile
                )
                room_id = writer.room_id
                if alias is not None:
                    if not await aliases.create_alias(
                        writer.conn, alias, room_id, user_id, now_ms()
                    ):
                        raise ServiceError(400, "M_ROOM_IN_USE", f"{alias} is already in use")
                if request.visibility == "public":
                    await aliases.set_room_public(writer.conn, room_id, True)
                persisted = list(writer.persisted)
        except EventNotAllowed as exc:
            raise forbidden(str(exc)) from None
        return room_id, persisted

    async def _initial_events(
        self,
        writer: RoomWriter,
        user_id: str,
        request: CreateRoomRequest,
        preset: str,
        trusted: list[str],
        alias: str | None,
        profile: Mapping[str, str],
    ) -> None:
        await writer.append(
            "m.room.member", user_id, {"membership": "join", **profile}, state_key=user_id
        )
        power_levels = _default_power_levels(writer.room_version, user_id, trusted)
        if preset == "public_chat":
            power_levels["invite"] = 0
        override = request.power_level_content_override or {}
        power_levels.update(override)
        await writer.append("m.room.power_levels", user_id, power_levels, state_key="")
        if alias is not None:
            await writer.append("m.room.canonical_alias", user_id, {"alias": alias}, state_key="")
        join_rule = "public" if preset == "public_chat" else "invite"
        guest_access = "forbidden" if preset == "public_chat" else "can_join"
        preset_state = {
            ("m.room.join_rules", ""): {"join_rule": join_rule},
            ("m.room.history_visibility", ""): {"history_visibility": "shared"},
            ("m.room.guest_access", ""): {"guest_access": guest_access},
        }
        initial = {
            (item["type"], item.get("state_key", "")): item["content"]
            for item in request.initial_state
        }
        # `name` and `topic` overwrite their events of initial_state.
        if request.name is not None:
            initial.pop(("m.room.name", ""), None)
        if request.topic is not None:
            initial.pop(("m.room.topic", ""), None)
        for key, content in preset_state.items():
            if key not in initial:
                await writer.append(key[0], user_id, content, state_key=key[1])
        for (event_type, state_key), content in initial.items():
            if event_type in ("m.room.create", "m.room.member", "m.room.power_levels"):
                continue
            await writer.append(event_type, user_id, content, state_key=state_key)
        if request.name is not None:
            await writer.append("m.room.name", user_id, {"name": request.name}, state_key="")
        if request.topic is not None:
            await writer.append("m.room.topic", user_id, topic_content(request.topic), state_key="")
        invite: dict[str, Any] = {"membership": "invite"}
        if request.is_direct:
            invite["is_direct"] = True
        for invitee in request.invite:
            if server_name_of(invitee, "@") == self.server_name:
                await writer.append("m.room.member", user_id, invite, state_key=invitee)
                continue
            # The invitee's server must co-sign; it refusing fails the whole creation.
            event, prev_ids, new_key = await writer.prepare(
                "m.room.member", user_id, invite, state_key=invitee
            )
            event = await self.remote.invite(writer, event)
            await writer.persist(event, prev_ids=prev_ids, new_key=new_key)
