"""The redaction algorithm of each room version (spec: room versions, "Redactions").

Redaction strips an event down to the keys that authorisation needs. The redacted form
is what servers sign and what the reference hash (the event id from room v3) covers, and
an event whose content hash fails is replaced by it.
"""

from __future__ import annotations

from typing import Any

from federation.room_versions import RedactionAlgorithm, RoomVersion
from federation.types import JsonDict

_TOP_LEVEL_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# Room v11 (MSC2176) no longer protects origin, membership and prev_state.
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVELS_V1 = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)

# Content keys kept per event type; m.room.create and m.room.member are special-cased below.
_CONTENT_KEYS: dict[RedactionAlgorithm, dict[str, tuple[str, ...]]] = {}
_CONTENT_KEYS[RedactionAlgorithm.V6] = {
    "m.room.create": ("creator",),
    "m.room.join_rules": ("join_rule",),
    "m.room.power_levels": _POWER_LEVELS_V1,
    "m.room.history_visibility": ("history_visibility",),
}
_CONTENT_KEYS[RedactionAlgorithm.V1] = {
    **_CONTENT_KEYS[RedactionAlgorithm.V6],
    "m.room.aliases": ("aliases",),
}
_CONTENT_KEYS[RedactionAlgorithm.V8] = {
    **_CONTENT_KEYS[RedactionAlgorithm.V6],
    "m.room.join_rules": ("join_rule", "allow"),
}
_CONTENT_KEYS[RedactionAlgorithm.V9] = _CONTENT_KEYS[RedactionAlgorithm.V8]
_CONTENT_KEYS[RedactionAlgorithm.V11] = {
    **_CONTENT_KEYS[RedactionAlgorithm.V8],
    "m.room.power_levels": (*_POWER_LEVELS_V1, "invite"),
    "m.room.redaction": ("redacts",),
}


def redact(pdu: JsonDict, room_version: RoomVersion, *, copy: bool = True) -> JsonDict:
    """The redacted form of `pdu`; the input is never modified.

    With `copy=False` the result shares nested values (lists, sub-objects) with `pdu`:
    cheaper, for callers that only encode or hash the result and never mutate it.
    """
    algorithm = room_version.redaction
    top_level = _TOP_LEVEL_V11 if algorithm is RedactionAlgorithm.V11 else _TOP_LEVEL_V1
    redacted = {key: value for key, value in pdu.items() if key in top_level}
    content = pdu.get("content")
    redacted["content"] = (
        _redact_content(pdu.get("type"), content, algorithm) if isinstance(content, dict) else {}
    )
    return _copy_json(redacted) if copy else redacted


def _redact_content(
    event_type: object, content: JsonDict, algorithm: RedactionAlgorithm
) -> JsonDict:
    if event_type == "m.room.create" and algorithm is RedactionAlgorithm.V11:
        return dict(content)
    if event_type == "m.room.member":
        return _redact_member(content, algorithm)
    if not isinstance(event_type, str):
        return {}
    kept = _CONTENT_KEYS[algorithm].get(event_type, ())
    return {key: content[key] for key in kept if key in content}


def _redact_member(content: JsonDict, algorithm: RedactionAlgorithm) -> JsonDict:
    redacted = {"membership": content["membership"]} if "membership" in content else {}
    if algorithm in (RedactionAlgorithm.V9, RedactionAlgorithm.V11):
        if "join_authorised_via_users_server" in content:
            redacted["join_authorised_via_users_server"] = content[
                "join_authorised_via_users_server"
            ]
    if algorithm is RedactionAlgorithm.V11:
        invite = content.get("third_party_invite")
        if isinstance(invite, dict):
            redacted["third_party_invite"] = (
                {"signed": invite["signed"]} if "signed" in invite else {}
            )
    return redacted


def _copy_json(value: Any) -> Any:
    """A deep copy of plain JSON data, much faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value
