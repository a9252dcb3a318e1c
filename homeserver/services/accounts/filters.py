"""Filters: what a client wants from /sync and /messages.

`parse_filter` checks a filter's shape against the spec's Filter schema and
turns it into the dataclasses below, whose `matches` decide event by event.
Uploaded filters are stored as the client sent them and numbered per user.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from homeserver.services.accounts.account_data import check_owner
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import ServiceError, bad_json, not_found
from homeserver.services.core.stored_json import ensure_storable
from homeserver.storage.accounts import filters
from homeserver.storage.core.pool import Database

_FILTER_ID = re.compile(r"[0-9]{1,18}")  # fits the BIGINT column
# Filters are stored for good and read on every sync that names them; a real one is a
# few hundred bytes, so 64 KiB leaves room for long room and sender lists.
MAX_FILTER_BYTES = 64 * 1024


def wildcard_match(pattern: str, value: str) -> bool:
    """Whether `value` matches `pattern`, where `*` stands for any run of characters.

    Linear in the length of `value`: a regex of many `*` could backtrack for ages.
    """
    first, *rest = pattern.split("*")
    if not rest:
        return pattern == value
    *middle, last = rest
    if len(value) < len(first) + len(last):
        return False
    if not value.startswith(first) or not value.endswith(last):
        return False
    position, end = len(first), len(value) - len(last)
    for part in middle:
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


@dataclass(frozen=True, slots=True)
class TypeSet:
    """Event types, exact or with `*` wildcards."""

    exact: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: list[str]) -> TypeSet:
        return cls(
            frozenset(p for p in patterns if "*" not in p), tuple(p for p in patterns if "*" in p)
        )

    def __contains__(self, event_type: object) -> bool:
        if not isinstance(event_type, str):
            return False
        if event_type in self.exact:
            return True
        return any(wildcard_match(pattern, event_type) for pattern in self.wildcards)


FieldPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Absent include lists (None) include everything; exclusions win over inclusions.
    An event without a sender (account data) is not judged by the sender lists."""

    limit: int | None = None
    types: TypeSet | None = None
    not_types: TypeSet = field(default_factory=TypeSet)
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()

    def matches(self, event: Mapping[str, Any]) -> bool:
        event_type = event.get("type")
        if event_type in self.not_types:
            return False
        if self.types is not None and event_type not in self.types:
            return False
        sender = event.get("sender")
        if isinstance(sender, str):
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        return True


@dataclass(frozen=True, slots=True)
class RoomEventFilter(EventFilter):
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False
    # `event_fields` given with a /messages or /context filter (a Filter's key the
    # spec leaves out of RoomEventFilter; honoured there all the same).
    field_paths: tuple[FieldPath, ...] | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        if not EventFilter.matches(self, event):
            return False
        room_id = event.get("room_id")
        if isinstance(room_id, str):
            if room_id in self.not_rooms:
                return False
            if self.rooms is not None and room_id not in self.rooms:
                return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, dict) and "url" in content
            if has_url != self.contains_url:
                return False
        return True


@dataclass(frozen=True, slots=True)
class RoomFilter:
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def matches_room(self, room_id: str) -> bool:
        """Applied before the per-section filters."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass(frozen=True, slots=True)
class Filter:
    room: RoomFilter = field(default_factory=RoomFilter)
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    event_fields: tuple[str, ...] | None = None
    event_format: Literal["client", "federation"] = "client"
    # `event_fields` parsed; None keeps every field.
    field_paths: tuple[FieldPath, ...] | None = None


def parse_field_path(text: str) -> FieldPath:
    """A dot-separated property path as the spec's appendix writes them: `.` separates
    properties, `\\.` is a literal dot and `\\\\` a literal backslash (so
    `content.m\\.relates_to` names `content["m.relates_to"]`)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            if escaped in (".", "\\"):
                current.append(escaped)
            else:
                current.append(char + escaped)
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(parts)


def only_fields(event: Mapping[str, Any], paths: Sequence[FieldPath]) -> dict[str, Any]:
    """A copy of `event` holding only the properties `paths` name (`event_fields`).

    A path through something that is not an object, or to nothing, adds nothing;
    the event given is never changed (rendered events are shared between responses).
    """
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = event
        for key in path:
            if not isinstance(source, dict) or key not in source:
                break
            source = source[key]
        else:
            target = out
            for key in path[:-1]:
                # A copy: an earlier path may have put the event's own object here.
                nested = target.get(key)
                target[key] = nested = dict(nested) if isinstance(nested, dict) else {}
                target = nested
            target[path[-1]] = source
    return out


# Parsing: each helper takes the object holding the key and a dotted path for messages.


def _given(parent: Mapping[str, Any], key: str, path: str) -> Any:
    """The value under `key`, None when absent. An explicit null is refused, as on
    Synapse: the filter is served back as uploaded, and the spec types no field null."""
    value = parent.get(key)
    if value is None and key in parent:
        raise bad_json(f"{path}{key} must not be null")
    return value


def _object(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = _given(parent, key, path)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json(f"{path}{key} must be an object")
    return value


def _bool(parent: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = _given(parent, key, path)
    if value is not None and not isinstance(value, bool):
        raise bad_json(f"{path}{key} must be a boolean")
    return value


def _strings(parent: Mapping[str, Any], key: str, path: str, prefix: str = "") -> list[str] | None:
    value = _given(parent, key, path)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.startswith(prefix) for item in value
    ):
        what = f"strings starting with {prefix!r}" if prefix else "strings"
        raise bad_json(f"{path}{key} must be a list of {what}")
    return value


def _id_set(parent: Mapping[str, Any], key: str, path: str, prefix: str) -> frozenset[str] | None:
    items = _strings(parent, key, path, prefix)
    return None if items is None else frozenset(items)


def _event_filter_fields(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    limit = _given(value, "limit", path)
    # 0 is valid, as clients built against Synapse rely on: a timeline of no events,
    # for a room list with state only.
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise bad_json(f"{path}limit must be a non-negative integer")
    types = _strings(value, "types", path)
    return {
        "limit": limit,
        "types": None if types is None else TypeSet.of(types),
        "not_types": TypeSet.of(_strings(value, "not_types", path) or []),
        "senders": _id_set(value, "senders", path, "@"),
        "not_senders": _id_set(value, "not_senders", path, "@") or frozenset(),
    }


def _event_filter(parent: Mapping[str, Any], key: str, path: str) -> EventFilter:
    return EventFilter(**_event_filter_fields(_object(parent, key, path), f"{path}{key}."))


def _room_event_filter(parent: Mapping[str, Any], key: str, path: str) -> RoomEventFilter:
    value = _object(parent, key, path)
    path = f"{path}{key}."
    return RoomEventFilter(
        **_event_filter_fields(value, path),
        rooms=_id_set(value, "rooms", path, "!"),
        not_rooms=_id_set(value, "not_rooms", path, "!") or frozenset(),
        contains_url=_bool(value, "contains_url", path),
        lazy_load_members=bool(_bool(value, "lazy_load_members", path)),
        include_redundant_members=bool(_bool(value, "include_redundant_members", path)),
        unread_thread_notifications=bool(_bool(value, "unread_thread_notifications", path)),
    )


def _field_paths(event_fields: list[str]) -> tuple[FieldPath, ...]:
    paths = tuple(parse_field_path(text) for text in event_fields)
    if any(not all(path) for path in paths):
        raise bad_json("event_fields entries must be paths of non-empty property names")
    return paths


def parse_filter(definition: Any) -> Filter:
    """The Filter a JSON filter definition describes, or 400 M_BAD_JSON."""
    if not isinstance(definition, dict):
        raise bad_json("A filter must be a JSON object")
    room = _object(definition, "room", "")
    event_format = _given(definition, "event_format", "")
    if event_format is None:
        event_format = "client"
    if event_format not in ("client", "federation"):
        raise bad_json("event_format must be 'client' or 'federation'")
    event_fields = _strings(definition, "event_fields", "")
    return Filter(
        room=RoomFilter(
            rooms=_id_set(room, "rooms", "room.", "!"),
            not_rooms=_id_set(room, "not_rooms", "room.", "!") or frozenset(),
            include_leave=bool(_bool(room, "include_leave", "room.")),
            timeline=_room_event_filter(room, "timeline", "room."),
            state=_room_event_filter(room, "state", "room."),
            ephemeral=_room_event_filter(room, "ephemeral", "room."),
            account_data=_room_event_filter(room, "account_data", "room."),
        ),
        presence=_event_filter(definition, "presence", ""),
        account_data=_event_filter(definition, "account_data", ""),
        event_fields=None if event_fields is None else tuple(event_fields),
        event_format=event_format,
        field_paths=None if event_fields is None else _field_paths(event_fields),
    )


class FilterService:
    """Filters users upload, numbered per user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_filter(
        self, requester: Requester, user_id: str, definition: Mapping[str, Any]
    ) -> str:
        """Validate and store a filter; returns its id."""
        check_owner(requester, user_id, "filters")
        parse_filter(definition)
        ensure_storable(definition, "Filter")
        if len(orjson.dumps(definition)) > MAX_FILTER_BYTES:
            raise ServiceError(
                413, "M_TOO_LARGE", f"Filter is larger than {MAX_FILTER_BYTES} bytes"
            )
        async with self.db.pool.connection() as conn:
            return str(await filters.add_filter(conn, user_id, definition))

    async def get_filter_definition(
        self, requester: Requester, user_id: str, filter_id: str
    ) -> dict[str, Any]:
        """A stored filter as uploaded; 404 for ids that are not this user's filters."""
        check_owner(requester, user_id, "filters")
        definition = None
        if _FILTER_ID.fullmatch(filter_id):
            async with self.db.pool.connection() as conn:
                definition = await filters.get_filter(conn, user_id, int(filter_id))
        if definition is None:
            raise not_found("Unknown filter")
        return definition
