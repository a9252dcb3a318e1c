"""The authorisation rules of room versions 1 to 12 (spec: room versions, "Authorisation rules").

Pure functions over `Event`s: `check_auth` decides whether an event is allowed given a
state map (its auth events, the state before it, or the current state: the three checks
a server makes), `check_auth_events_shape` checks the auth events an event lists, and
`auth_types_for_event` says which state an event needs (and so which auth events a new
event must cite). Reading power levels is `power_levels`' job.

Signatures are not checked here: the rule that a `join_authorised_via_users_server`
join must be signed by that user's server belongs with the other signature checks.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.signing

from federation import unpadded_base64
from federation.events import (
    ALIASES,
    AUTHORISING_USER,
    CREATE,
    CREATE_KEY,
    JOIN_RULES_KEY,
    MEMBER,
    POWER_LEVELS,
    POWER_LEVELS_KEY,
    REDACTION,
    THIRD_PARTY_INVITE,
    Event,
    StateKey,
)
from federation.identifiers import create_event_id_for_room, domain_of, is_user_id
from federation.power_levels import (
    NAMED_LEVEL_DEFAULTS,
    StateEvents,
    creators,
    named_level,
    parse_level,
    required_level,
    user_level,
)
from federation.room_versions import KNOWN_ROOM_VERSIONS, EventIdFormat, RoomVersion
from federation.signing import signing_bytes, verify_bytes

# The event type names and state keys come from `events` and the identifier helpers from
# `identifiers`; callers of the auth rules may import them from here too.
AuthState = StateEvents


class AuthError(Exception):
    """The event is not allowed; `reason` says which rule refused it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def auth_types_for(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The state an event needs to be authorised (spec: "Auth events selection").

    Takes bare fields so the server can select auth events before the event exists.
    """
    if event_type == CREATE:
        return set()
    types: set[StateKey] = {POWER_LEVELS_KEY, (MEMBER, sender)}
    if not room_version.room_id_from_create_event:
        types.add(CREATE_KEY)
    if event_type != MEMBER:
        return types
    membership = content.get("membership")
    if state_key is not None:
        types.add((MEMBER, state_key))
    if membership in ("join", "invite", "knock"):
        types.add(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_invite_token(content)
        if token is not None:
            types.add((THIRD_PARTY_INVITE, token))
    if membership == "join" and room_version.restricted_join:
        authoriser = content.get(AUTHORISING_USER)
        if isinstance(authoriser, str):
            types.add((MEMBER, authoriser))
    return types


def auth_types_for_event(event: Event) -> set[StateKey]:
    """`auth_types_for` an existing event."""
    return auth_types_for(
        event.room_version, event.type, event.sender, event.state_key, event.content
    )


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def check_auth_events_shape(
    event: Event, auth_events: Iterable[Event], rejected: Container[str] = frozenset()
) -> None:
    """Rules on the auth events an event cites (rule 2, rule 3 in v12).

    `auth_events` must hold every event listed in `event.auth_event_ids`; `rejected`
    holds the ids of events that were rejected. Each cited event must be a distinct
    (type, state_key) of the auth events selection, accepted, and in the same room; the
    create event must be cited before v12 and must not be from v12 on.
    """
    if event.type == CREATE:
        return
    rv = event.room_version
    by_id = {auth_event.event_id: auth_event for auth_event in auth_events}
    expected = auth_types_for_event(event)
    seen: set[StateKey] = set()
    for auth_id in event.auth_event_ids:
        auth_event = by_id.get(auth_id)
        if auth_event is None:
            raise AuthError(f"auth event {auth_id} is unknown")
        if auth_event.state_key is None:
            raise AuthError(f"auth event {auth_id} is not a state event")
        key = auth_event.state_tuple
        if key in seen:
            raise AuthError(f"duplicate auth event for {key}")
        if key not in expected:
            raise AuthError(f"auth event {auth_id} for {key} is not one this event needs")
        if auth_id in rejected:
            raise AuthError(f"auth event {auth_id} was rejected")
        if auth_event.room_id != event.room_id:
            raise AuthError(f"auth event {auth_id} is in another room")
        seen.add(key)
    if rv.room_id_from_create_event:
        create_id = create_event_id_for_room(event.room_id)
        if create_id is None or create_id in rejected:
            raise AuthError("room id does not name an accepted create event")
    elif CREATE_KEY not in seen:
        raise AuthError("no create event among the auth events")


def check_auth(event: Event, auth_state: AuthState) -> None:
    """Raise `AuthError` unless `event` is allowed in a room whose state is `auth_state`.

    `auth_state` maps (type, state_key) to events and needs at least the keys of
    `auth_types_for_event`; in v12 it must also hold the create event (which events no
    longer cite: take it from the room id).
    """
    if event.type == CREATE:
        _check_create(event)
        return
    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no create event in the auth state")
    rv = event.room_version
    if rv.room_id_from_create_event and create.event_id != create_event_id_for_room(event.room_id):
        raise AuthError("room id is not derived from the room's create event")
    if create.content.get("m.federate") is False and domain_of(event.sender) != domain_of(
        create.sender
    ):
        raise AuthError("room does not federate")
    if rv.special_case_aliases_auth and event.type == ALIASES:
        if event.state_key is None or event.state_key != domain_of(event.sender):
            raise AuthError("m.room.aliases state key must be the sender's domain")
        return
    if event.type == MEMBER:
        _check_membership(event, auth_state, create)
        return

    power_levels = auth_state.get(POWER_LEVELS_KEY)
    sender = auth_state.get((MEMBER, event.sender))
    if sender is None or sender.membership != "join":
        raise AuthError(f"{event.sender} is not in the room")
    sender_level = user_level(event.sender, create, power_levels)
    if event.type == THIRD_PARTY_INVITE:
        if sender_level >= named_level(power_levels, "invite"):
            return
        raise AuthError("sender may not invite")
    if required_level(event.type, event.is_state, power_levels) > sender_level:
        raise AuthError(f"sender's power level is too low to send {event.type}")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise AuthError("state keys starting with @ are reserved for that user")
    if event.type == POWER_LEVELS:
        _check_power_levels(event, create, power_levels, sender_level)
    if event.type == REDACTION and rv.event_id_format is EventIdFormat.V1:
        _check_v1_redaction(event, power_levels, sender_level)


def _check_create(event: Event) -> None:
    rv = event.room_version
    if event.pdu.get("prev_events"):
        raise AuthError("create event has prev events")
    if rv.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise AuthError("create event has a room id")
    elif domain_of(event.room_id) != domain_of(event.sender):
        raise AuthError("create event's room id is not on the sender's server")
    content = event.content
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        raise AuthError("create event names an unknown room version")
    if not rv.msc2175_implicit_room_creator and "creator" not in content:
        raise AuthError("create event has no creator")
    if rv.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_user_id(user) for user in extra):
            raise AuthError("additional_creators must be a list of user ids")


def _level_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str], rv: RoomVersion
) -> Iterable[tuple[str, int | None, int | None]]:
    """(key, old, new) for each key added, changed or removed between two level maps."""
    for key in keys:
        old_level = parse_level(old[key], rv) if key in old else None
        if key in new:
            new_level = parse_level(new[key], rv)
            if new_level is None:
                raise AuthError(f"power level for {key} is not an integer")
        else:
            new_level = None
        if old_level != new_level:
            yield key, old_level, new_level


def _mapping(content: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = content.get(field)
    return value if isinstance(value, Mapping) else {}


def _check_power_levels(
    event: Event, create: Event, current: Event | None, sender_level: float
) -> None:
    """Rule 10 (9 in later versions): well-formed levels, and no change beyond the
    sender's own power."""
    rv = event.room_version
    content = event.content
    if rv.integer_power_levels:
        for name in NAMED_LEVEL_DEFAULTS:
            if name in content and type(content[name]) is not int:
                raise AuthError(f"{name} must be an integer")
        for field in ("events", "notifications"):
            if field in content:
                values = content[field]
                if not isinstance(values, Mapping) or any(
                    type(level) is not int for level in values.values()
                ):
                    raise AuthError(f"{field} must map to integers")
    users = content.get("users", {})
    if not isinstance(users, Mapping):
        raise AuthError("users must be an object")
    for user, level in users.items():
        if not is_user_id(user) or parse_level(level, rv) is None:
            raise AuthError(f"bad users entry {user!r}")
    if rv.privileged_creators and not creators(create).isdisjoint(users):
        raise AuthError("room creators cannot be given a power level")
    if current is None:
        return

    old = current.content
    for _, old_level, new_level in _level_changes(old, content, NAMED_LEVEL_DEFAULTS, rv):
        if (old_level is not None and old_level > sender_level) or (
            new_level is not None and new_level > sender_level
        ):
            raise AuthError("cannot change a level above the sender's own")
    fields = ["events", "notifications"] if rv.limit_notifications_power_levels else ["events"]
    for field in fields:
        old_map, new_map = _mapping(old, field), _mapping(content, field)
        for _, old_level, new_level in _level_changes(
            old_map, new_map, sorted(old_map.keys() | new_map.keys()), rv
        ):
            if (old_level is not None and old_level > sender_level) or (
                new_level is not None and new_level > sender_level
            ):
                raise AuthError(f"cannot change {field} levels above the sender's own")
    old_users = _mapping(old, "users")
    for user, old_level, new_level in _level_changes(
        old_users, users, sorted(old_users.keys() | users.keys()), rv
    ):
        if user != event.sender and old_level is not None and old_level >= sender_level:
            raise AuthError("cannot change the level of a user at or above the sender's")
        if new_level is not None and new_level > sender_level:
            raise AuthError("cannot raise a user above the sender's level")


def _check_v1_redaction(event: Event, power_levels: Event | None, sender_level: float) -> None:
    """Rooms 1 and 2: redact at the redact level, or events from one's own server."""
    if sender_level >= named_level(power_levels, "redact"):
        return
    redacts = event.redacts
    if redacts is not None and domain_of(redacts) == domain_of(event.event_id):
        return
    raise AuthError("sender may not redact this event")


def _membership(auth_state: AuthState, user_id: str) -> str | None:
    member = auth_state.get((MEMBER, user_id))
    return None if member is None else member.membership


@dataclass(frozen=True, slots=True)
class _MemberChange:
    """What the membership rules read of an m.room.member event and the room."""

    event: Event
    auth_state: AuthState
    create: Event
    target: str
    sender_membership: str | None
    power_levels: Event | None
    join_rule: Any


def _check_membership(event: Event, auth_state: AuthState, create: Event) -> None:
    """The m.room.member rules: join, invite, leave, ban and knock."""
    target = event.state_key
    membership = event.content.get("membership")
    if target is None or membership is None:
        raise AuthError("member event without state key or membership")
    join_rules = auth_state.get(JOIN_RULES_KEY)
    change = _MemberChange(
        event,
        auth_state,
        create,
        target,
        _membership(auth_state, event.sender),
        auth_state.get(POWER_LEVELS_KEY),
        # Without a join rules event the room is invite-only, as other servers read it.
        join_rules.content.get("join_rule") if join_rules is not None else "invite",
    )
    if membership == "join":
        _check_join(change)
    elif membership == "invite":
        _check_invite(change)
    elif membership == "leave":
        _check_leave(change)
    elif membership == "ban":
        _check_ban(change)
    elif membership == "knock" and event.room_version.knock:
        _check_knock(change)
    else:
        raise AuthError(f"unknown membership {membership!r}")


def _check_join(change: _MemberChange) -> None:
    event, create, join_rule = change.event, change.create, change.join_rule
    rv = event.room_version
    creator = create.sender if rv.msc2175_implicit_room_creator else create.content.get("creator")
    if event.prev_event_ids == (create.event_id,) and change.target == creator:
        return
    if event.sender != change.target:
        raise AuthError("cannot join on behalf of another user")
    if change.sender_membership == "ban":
        raise AuthError("sender is banned")
    if join_rule == "invite" or (rv.knock and join_rule == "knock"):
        if change.sender_membership in ("invite", "join"):
            return
        raise AuthError("room is invite only")
    if (rv.restricted_join and join_rule == "restricted") or (
        rv.knock_restricted_join and join_rule == "knock_restricted"
    ):
        if change.sender_membership in ("invite", "join"):
            return
        _check_join_authoriser(event, change.auth_state, create, change.power_levels)
        return
    if join_rule == "public":
        return
    raise AuthError(f"cannot join a room whose join rule is {join_rule!r}")


def _check_invite(change: _MemberChange) -> None:
    event, create, power_levels = change.event, change.create, change.power_levels
    target_membership = _membership(change.auth_state, change.target)
    if "third_party_invite" in event.content:
        if target_membership == "ban":
            raise AuthError("invitee is banned")
        _check_third_party_invite(event, change.auth_state)
        return
    if change.sender_membership != "join":
        raise AuthError("inviter is not in the room")
    if target_membership in ("join", "ban"):
        raise AuthError(f"invitee's membership is {target_membership}")
    if user_level(event.sender, create, power_levels) >= named_level(power_levels, "invite"):
        return
    raise AuthError("sender may not invite")


def _check_leave(change: _MemberChange) -> None:
    sender, target = change.event.sender, change.target
    create, power_levels = change.create, change.power_levels
    if sender == target:
        knock = change.event.room_version.knock
        allowed = ("invite", "join", "knock") if knock else ("invite", "join")
        if change.sender_membership in allowed:
            return
        raise AuthError("cannot leave a room one is not in")
    if change.sender_membership != "join":
        raise AuthError("sender is not in the room")
    sender_level = user_level(sender, create, power_levels)
    if _membership(change.auth_state, target) == "ban" and sender_level < named_level(
        power_levels, "ban"
    ):
        raise AuthError("sender may not unban")
    if sender_level >= named_level(power_levels, "kick") and (
        user_level(target, create, power_levels) < sender_level
    ):
        return
    raise AuthError("sender may not kick this user")


def _check_ban(change: _MemberChange) -> None:
    create, power_levels = change.create, change.power_levels
    if change.sender_membership != "join":
        raise AuthError("sender is not in the room")
    sender_level = user_level(change.event.sender, create, power_levels)
    if sender_level >= named_level(power_levels, "ban") and (
        user_level(change.target, create, power_levels) < sender_level
    ):
        return
    raise AuthError("sender may not ban this user")


def _check_knock(change: _MemberChange) -> None:
    rv, join_rule = change.event.room_version, change.join_rule
    if join_rule != "knock" and not (rv.knock_restricted_join and join_rule == "knock_restricted"):
        raise AuthError("room does not allow knocking")
    if change.event.sender != change.target:
        raise AuthError("cannot knock on behalf of another user")
    if change.sender_membership in ("ban", "invite", "join"):
        raise AuthError(f"cannot knock with membership {change.sender_membership}")


def _check_join_authoriser(
    event: Event, auth_state: AuthState, create: Event, power_levels: Event | None
) -> None:
    """Restricted joins: the user named by the resident server must be joined and able
    to invite."""
    authoriser = event.content.get(AUTHORISING_USER)
    if not isinstance(authoriser, str):
        raise AuthError("restricted join without an authorising user")
    if _membership(auth_state, authoriser) != "join":
        raise AuthError("authorising user is not in the room")
    if user_level(authoriser, create, power_levels) < named_level(power_levels, "invite"):
        raise AuthError("authorising user may not invite")


def _check_third_party_invite(event: Event, auth_state: AuthState) -> None:
    """An invite redeeming an m.room.third_party_invite: same inviter, and `signed`
    signed with one of the invite's public keys."""
    invite = event.content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third party invite is not signed")
    if "mxid" not in signed or "token" not in signed:
        raise AuthError("third party invite lacks mxid or token")
    if signed["mxid"] != event.state_key:
        raise AuthError("third party invite is for another user")
    token = signed["token"]
    original = auth_state.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if original is None:
        raise AuthError("no m.room.third_party_invite for this token")
    if original.sender != event.sender:
        raise AuthError("third party invite was sent by someone else")
    if not _signed_by_invite_key(signed, original):
        raise AuthError("third party invite signature does not verify")


def _public_keys(invite: Event) -> list[str]:
    content = invite.content
    keys = [content["public_key"]] if isinstance(content.get("public_key"), str) else []
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_by_invite_key(signed: Mapping[str, Any], invite: Event) -> bool:
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    try:
        message = signing_bytes(signed)
    except ValueError:
        return False
    for public_key in _public_keys(invite):
        verify_key = _verify_key(public_key)
        if verify_key is None:
            continue
        for server_signatures in signatures.values():
            if not isinstance(server_signatures, Mapping):
                continue
            for key_id, signature in server_signatures.items():
                if isinstance(key_id, str) and key_id.startswith("ed25519:"):
                    if verify_bytes(message, signature, verify_key):
                        return True
    return False


def _verify_key(public_key: str) -> nacl.signing.VerifyKey | None:
    """An identity server's key; written in either base64 alphabet in the wild."""
    for urlsafe in (False, True):
        try:
            raw = unpadded_base64.decode(public_key, urlsafe=urlsafe)
        except ValueError:
            continue
        if len(raw) == nacl.bindings.crypto_sign_PUBLICKEYBYTES:
            return nacl.signing.VerifyKey(raw)
    return None
