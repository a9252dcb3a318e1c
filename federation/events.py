"""A PDU as the protocol sees it: the signed JSON plus its room version and event id.

`Event` keeps the JSON exactly as received or created (what was signed) and
reads fields out of it on demand; it never rewrites the JSON. Rules that differ by
room version (where `redacts` lives, the shape of `auth_events`, how a v12 room id
is derived) are answered here so callers need not know them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.identifiers import domain_of, room_id_for_create_event
from federation.room_versions import EventIdFormat, RoomVersion
from federation.types import JsonDict

StateKey = tuple[str, str]
"""(type, state_key): the slot of the room state a state event fills."""

# The event types the protocol itself reads (auth rules, state resolution, checks).
CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

# The m.room.member content key naming who authorised a restricted join (room v8+).
AUTHORISING_USER = "join_authorised_via_users_server"


def _ids(refs: Any) -> tuple[str, ...]:
    """Event references: a list of ids (room v3+) or of [id, hashes] pairs (v1, v2)."""
    if not isinstance(refs, list):
        return ()
    out: list[str] = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, list) and ref and isinstance(ref[0], str):
            out.append(ref[0])
    return tuple(out)


class Event:
    """An immutable view over one PDU. Compare and hash by event id."""

    __slots__ = ("_auth", "_prev", "event_id", "pdu", "room_version")

    def __init__(self, pdu: JsonDict, room_version: RoomVersion, event_id: str) -> None:
        self.pdu = pdu
        self.room_version = room_version
        self.event_id = event_id
        self._auth: tuple[str, ...] | None = None
        self._prev: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r} by {self.sender}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    @property
    def type(self) -> str:
        value = self.pdu.get("type")
        return value if isinstance(value, str) else ""

    @property
    def state_key(self) -> str | None:
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """The (type, state_key) this state event occupies; only for state events."""
        assert self.state_key is not None
        return (self.type, self.state_key)

    @property
    def sender(self) -> str:
        value = self.pdu.get("sender")
        return value if isinstance(value, str) else ""

    @property
    def room_id(self) -> str:
        if (
            self.room_version.room_id_from_create_event
            and self.type == CREATE
            and self.state_key == ""
        ):
            return room_id_for_create_event(self.event_id)
        value = self.pdu.get("room_id")
        return value if isinstance(value, str) else ""

    @property
    def content(self) -> Mapping[str, Any]:
        value = self.pdu.get("content")
        return value if isinstance(value, dict) else {}

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def depth(self) -> int:
        value = self.pdu.get("depth")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def origin_server_ts(self) -> int:
        value = self.pdu.get("origin_server_ts")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        if self._prev is None:
            self._prev = _ids(self.pdu.get("prev_events"))
        return self._prev

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        if self._auth is None:
            self._auth = _ids(self.pdu.get("auth_events"))
        return self._auth

    @property
    def redacts(self) -> str | None:
        """The event a redaction targets: in content from room v11, top level before."""
        if self.room_version.msc2176_redaction_rules:
            value = self.content.get("redacts")
        else:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def unsigned(self) -> Mapping[str, Any]:
        value = self.pdu.get("unsigned")
        return value if isinstance(value, dict) else {}

    @property
    def origin(self) -> str:
        """The server that created the event: the sender's domain."""
        return domain_of(self.sender)

    @property
    def uses_reference_hash_ids(self) -> bool:
        return self.room_version.event_id_format is not EventIdFormat.V1
