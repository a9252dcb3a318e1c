"""Room versions 1 to 12 as one registry of the properties that differ between them.

Code elsewhere asks a `RoomVersion` what to do ("does this version have knocking?")
rather than comparing version strings, so adding a version is one entry here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventIdFormat(enum.Enum):
    """How an event's id is formed."""

    V1 = "v1"  # "$opaque:server", carried in the event
    V2 = "v2"  # "$" + reference hash, standard unpadded base64 (room v3)
    V3 = "v3"  # "$" + reference hash, URL-safe unpadded base64 (room v4+)


class StateResAlgorithm(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"  # room v12: conflicted subgraph, iterative checks start from empty state


class RedactionAlgorithm(enum.Enum):
    V1 = "v1"  # rooms 1 to 5: keeps m.room.aliases content
    V6 = "v6"  # rooms 6 and 7: aliases no longer special
    V8 = "v8"  # room 8: join rules keep "allow"
    V9 = "v9"  # rooms 9 and 10: members also keep join_authorised_via_users_server
    V11 = "v11"  # rooms 11 and 12: new top-level and content rules


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    redaction: RedactionAlgorithm
    # Server signing keys must be valid (valid_until_ts) at the event's origin_server_ts.
    enforce_key_validity: bool
    # Rooms 1 to 5: m.room.aliases events are authorised by the sender's domain only.
    special_case_aliases_auth: bool
    # Rooms 6+: reject floats and out-of-range integers in event JSON.
    strict_canonical_json: bool
    # Rooms 6+: the "notifications" key of power levels is checked on change.
    limit_notifications_power_levels: bool
    knock: bool
    restricted_join: bool
    knock_restricted_join: bool
    # Rooms 10+: power level values must be integers, not strings.
    integer_power_levels: bool
    # Rooms 11+: "creator" is gone from m.room.create (the sender is the creator),
    # "redacts" moves into content, top-level "origin" is no longer protected.
    msc2175_implicit_room_creator: bool
    msc2176_redaction_rules: bool
    msc3989_redaction_rules: bool
    # Rooms 12: room id is derived from the create event, which is no auth event;
    # creators (sender + additional_creators) have infinite power.
    room_id_from_create_event: bool
    privileged_creators: bool


def _v(identifier: str, **overrides: object) -> RoomVersion:
    base: dict[str, object] = {
        "identifier": identifier,
        "event_id_format": EventIdFormat.V3,
        "state_res": StateResAlgorithm.V2,
        "redaction": RedactionAlgorithm.V9,
        "enforce_key_validity": True,
        "special_case_aliases_auth": False,
        "strict_canonical_json": True,
        "limit_notifications_power_levels": True,
        "knock": True,
        "restricted_join": True,
        "knock_restricted_join": False,
        "integer_power_levels": False,
        "msc2175_implicit_room_creator": False,
        "msc2176_redaction_rules": False,
        "msc3989_redaction_rules": False,
        "room_id_from_create_event": False,
        "privileged_creators": False,
    }
    base.update(overrides)
    return RoomVersion(**base)  # type: ignore[arg-type]


_OLD = {
    "redaction": RedactionAlgorithm.V1,
    "enforce_key_validity": False,
    "special_case_aliases_auth": True,
    "strict_canonical_json": False,
    "limit_notifications_power_levels": False,
    "knock": False,
    "restricted_join": False,
}

V1 = _v("1", event_id_format=EventIdFormat.V1, state_res=StateResAlgorithm.V1, **_OLD)
V2 = _v("2", event_id_format=EventIdFormat.V1, **_OLD)
V3 = _v("3", event_id_format=EventIdFormat.V2, **_OLD)
V4 = _v("4", **_OLD)
V5 = _v("5", **{**_OLD, "enforce_key_validity": True})
V6 = _v("6", redaction=RedactionAlgorithm.V6, knock=False, restricted_join=False)
V7 = _v("7", redaction=RedactionAlgorithm.V6, restricted_join=False)
V8 = _v("8", redaction=RedactionAlgorithm.V8)
V9 = _v("9")
V10 = _v("10", knock_restricted_join=True, integer_power_levels=True)
V11 = _v(
    "11",
    redaction=RedactionAlgorithm.V11,
    knock_restricted_join=True,
    integer_power_levels=True,
    msc2175_implicit_room_creator=True,
    msc2176_redaction_rules=True,
    msc3989_redaction_rules=True,
)
V12 = _v(
    "12",
    state_res=StateResAlgorithm.V2_1,
    redaction=RedactionAlgorithm.V11,
    knock_restricted_join=True,
    integer_power_levels=True,
    msc2175_implicit_room_creator=True,
    msc2176_redaction_rules=True,
    msc3989_redaction_rules=True,
    room_id_from_create_event=True,
    privileged_creators=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12)
}

DEFAULT_ROOM_VERSION = "12"


class UnsupportedRoomVersion(Exception):
    def __init__(self, identifier: str) -> None:
        super().__init__(f"unsupported room version {identifier!r}")
        self.identifier = identifier


def get_room_version(identifier: str) -> RoomVersion:
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(str(identifier)) from None
