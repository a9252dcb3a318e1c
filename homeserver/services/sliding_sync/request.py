"""What a sliding sync request asks for, parsed and validated from its JSON body.

Bad shapes are refused with M_INVALID_PARAM (Synapse answers the same for a body
that fails its model), never a 500.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import orjson

from homeserver.services.core.errors import invalid_param

MAX_TIMELINE_LIMIT = 1000
EXTENSIONS = ("to_device", "e2ee", "account_data", "receipts", "typing")
StateKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """How a room is sent: the widest of what its lists and subscription ask."""

    timeline_limit: int = 0
    required_state: frozenset[StateKey] = frozenset()

    def combine(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(
            max(self.timeline_limit, other.timeline_limit),
            self.required_state | other.required_state,
        )

    def key(self) -> str:
        """A short stable digest of the config, stored per room to notice when the
        client changes it."""
        return _digest(self)


@functools.lru_cache(maxsize=4096)
def _digest(config: RoomConfig) -> str:
    state = "\x00".join(f"{t}\x01{k}" for t, k in sorted(config.required_state))
    text = f"{config.timeline_limit}\x02{state}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class ListFilters:
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    spaces: tuple[str, ...] | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] = ()
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListRequest:
    ranges: tuple[tuple[int, int], ...]
    config: RoomConfig
    filters: ListFilters


@dataclass(frozen=True, slots=True)
class ExtensionRequest:
    enabled: bool = False
    lists: tuple[str, ...] = ("*",)
    rooms: tuple[str, ...] = ("*",)
    since: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class SlidingSyncRequest:
    conn_id: str = ""
    pos: str | None = None
    timeout_ms: int = 0
    lists: Mapping[str, ListRequest] = field(default_factory=dict)
    subscriptions: Mapping[str, RoomConfig] = field(default_factory=dict)
    extensions: Mapping[str, ExtensionRequest] = field(default_factory=dict)
    # What the body asks (all but the position and timeout), as a short digest: the
    # same request at a position nothing has moved since has nothing to answer.
    digest: str = ""


# Parsed parameters shared by the requests that ask the same: clients send the same
# lists and extensions on every request, and each held long-poll keeps its own.
_INTERNED: dict[Any, Any] = {}
MAX_INTERNED = 10_000
T = TypeVar("T")
V = TypeVar("V")


def _intern(value: T) -> T:
    return _intern_key(value, value)


def _intern_key(key: Hashable, value: T) -> T:
    if len(_INTERNED) > MAX_INTERNED:
        _INTERNED.clear()
    return cast(T, _INTERNED.setdefault(key, value))


def _shared(mapping: dict[str, V]) -> Mapping[str, V]:
    """An equal mapping already parsed, if any: held long-polls repeating one request
    share its lists and extensions rather than each keep its own (never mutated)."""
    key = ("mapping", *mapping.items())
    return cast(Mapping[str, V], _intern_key(key, mapping))


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_param(f"{name} must be an object")
    return value


def _bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise invalid_param(f"{name} must be a boolean")


def _int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_param(f"{name} must be a non-negative integer")
    return value


def _strings(value: Any, name: str, *, nullable: bool = False) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str) or (nullable and v is None) for v in value
    ):
        raise invalid_param(f"{name} must be a list of strings")
    return tuple(value)


def _config(value: Mapping[str, Any], name: str) -> RoomConfig:
    limit = min(_int(value.get("timeline_limit"), f"{name}.timeline_limit", 0), MAX_TIMELINE_LIMIT)
    raw = value.get("required_state") or []
    if not isinstance(raw, list):
        raise invalid_param(f"{name}.required_state must be a list")
    state: set[StateKey] = set()
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
        ):
            raise invalid_param(f"{name}.required_state entries must be [type, state_key]")
        state.add((item[0], item[1]))
    return _intern(RoomConfig(limit, frozenset(state)))


def _ranges(value: Any, name: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid_param(f"{name}.ranges must be a list of [start, end]")
    out = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item)
            or item[0] > item[1]
        ):
            raise invalid_param(f"{name}.ranges entries must be [start, end] with start <= end")
        out.append((item[0], item[1]))
    return tuple(out)


def _filters(value: Mapping[str, Any], name: str) -> ListFilters:
    return ListFilters(
        is_dm=_bool(value.get("is_dm"), f"{name}.is_dm"),
        is_encrypted=_bool(value.get("is_encrypted"), f"{name}.is_encrypted"),
        is_invite=_bool(value.get("is_invite"), f"{name}.is_invite"),
        spaces=_strings(value.get("spaces"), f"{name}.spaces"),
        room_types=_strings(value.get("room_types"), f"{name}.room_types", nullable=True),
        not_room_types=_strings(
            value.get("not_room_types"), f"{name}.not_room_types", nullable=True
        )
        or (),
        tags=_strings(value.get("tags"), f"{name}.tags"),
        not_tags=_strings(value.get("not_tags"), f"{name}.not_tags") or (),
    )


def _or_all(names: tuple[str, ...] | None) -> tuple[str, ...]:
    """Absent means every list (or subscription); an empty list means none."""
    return ("*",) if names is None else names


def _extension(value: Mapping[str, Any], name: str) -> ExtensionRequest:
    since = value.get("since")
    if since is not None and not isinstance(since, str):
        raise invalid_param(f"{name}.since must be a string")
    return _intern(
        ExtensionRequest(
            enabled=bool(_bool(value.get("enabled"), f"{name}.enabled")),
            lists=_or_all(_strings(value.get("lists"), f"{name}.lists")),
            rooms=_or_all(_strings(value.get("rooms"), f"{name}.rooms")),
            since=since,
            limit=_int(value.get("limit"), f"{name}.limit", 100),
        )
    )


def parse_request(body: Mapping[str, Any], pos: str | None, timeout_ms: int) -> SlidingSyncRequest:
    conn_id = body.get("conn_id") or ""
    if not isinstance(conn_id, str):
        raise invalid_param("conn_id must be a string")
    lists = {}
    for key, value in _object(body.get("lists"), "lists").items():
        entry = _object(value, f"lists.{key}")
        lists[key] = _intern(
            ListRequest(
                _ranges(entry.get("ranges"), f"lists.{key}"),
                _config(entry, f"lists.{key}"),
                _filters(_object(entry.get("filters"), f"lists.{key}.filters"), f"lists.{key}"),
            )
        )
    subscriptions = {
        room_id: _config(_object(value, f"room_subscriptions.{room_id}"), room_id)
        for room_id, value in _object(body.get("room_subscriptions"), "room_subscriptions").items()
    }
    raw_extensions = _object(body.get("extensions"), "extensions")
    extensions = {
        name: _extension(_object(raw_extensions.get(name), name), f"extensions.{name}")
        for name in EXTENSIONS
    }
    digest = hashlib.blake2b(
        orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()
    return SlidingSyncRequest(
        conn_id,
        pos,
        timeout_ms,
        _shared(lists),
        _shared(subscriptions),
        _shared(extensions),
        digest,
    )
