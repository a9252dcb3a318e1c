"""Who may do what in a room: power levels read from `m.room.create` and `m.room.power_levels`.

The auth rules, state resolution (which orders events by their sender's power) and the
server (which checks a client's request before building an event) all ask the same two
questions: "what is this user's level?" and "what level does this event need?". They are
answered here once, with the room-version rules for creators and stringy values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from federation.events import CREATE_KEY, POWER_LEVELS_KEY, Event, StateKey
from federation.room_versions import RoomVersion

StateEvents = Mapping[StateKey, Event]

# Room v12 creators outrank every number a power levels event can hold.
CREATOR_POWER_LEVEL = math.inf

# Defaults of the named levels when the power levels event (or the key) is absent.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
}


def parse_level(value: Any, room_version: RoomVersion) -> int | None:
    """A power level value as an int, or None when it is not one.

    Rooms before v10 accept strings holding integers (and rooms before v6 floats, which
    non-strict JSON allowed); booleans are never levels.
    """
    if type(value) is int:
        return value
    if room_version.integer_power_levels:
        return None
    if type(value) is float and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and len(value) <= 32:
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def creators(create: Event) -> frozenset[str]:
    """The room's creators: `content.creator` before v11, the sender from v11, plus
    `additional_creators` in v12 (ignoring entries that are not strings)."""
    rv = create.room_version
    if not rv.msc2175_implicit_room_creator:
        creator = create.content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    if not rv.privileged_creators:
        return frozenset((create.sender,))
    extra = create.content.get("additional_creators")
    names = [u for u in extra if isinstance(u, str)] if isinstance(extra, list) else []
    return frozenset((create.sender, *names))


def user_level(user_id: str, create: Event | None, power_levels: Event | None) -> float:
    """`user_id`'s power level given the room's create and power levels events.

    A float only because v12 creators have infinite power; otherwise an integer value.
    """
    if create is not None and create.room_version.privileged_creators:
        if user_id in creators(create):
            return CREATOR_POWER_LEVEL
    if power_levels is None:
        if create is not None and user_id in creators(create):
            return 100
        return 0
    rv = power_levels.room_version
    content = power_levels.content
    users = content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = parse_level(users[user_id], rv)
        if level is not None:
            return level
    return named_level(power_levels, "users_default")


def named_level(power_levels: Event | None, name: str) -> int:
    """One of the named levels (`ban`, `kick`, `redact`, `invite`, `*_default`)."""
    default = NAMED_LEVEL_DEFAULTS[name]
    if power_levels is None:
        return default
    level = parse_level(power_levels.content.get(name), power_levels.room_version)
    return default if level is None else level


def required_level(event_type: str, is_state: bool, power_levels: Event | None) -> int:
    """The level needed to send an event of `event_type` (the spec's "required power
    level"): its entry in `events`, else `state_default` or `events_default`."""
    if power_levels is not None:
        events = power_levels.content.get("events")
        if isinstance(events, Mapping) and event_type in events:
            level = parse_level(events[event_type], power_levels.room_version)
            if level is not None:
                return level
    return named_level(power_levels, "state_default" if is_state else "events_default")


def user_level_in_state(user_id: str, state: StateEvents) -> float:
    """`user_level` read from a state map ((type, state_key) -> event)."""
    return user_level(user_id, state.get(CREATE_KEY), state.get(POWER_LEVELS_KEY))


def required_level_in_state(event_type: str, state_key: str | None, state: StateEvents) -> int:
    """`required_level` for an event of `event_type` (a state event when `state_key`
    is not None), read from a state map."""
    return required_level(event_type, state_key is not None, state.get(POWER_LEVELS_KEY))
