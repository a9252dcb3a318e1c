"""Pagination tokens for room history, and the query parameters every paginated
endpoint shares.

A topological token `t<depth>_<stream>` names the gap just after the event at that
position: paginating backwards from it returns that event first, forwards returns
what follows it. Because positions are unique (the stream ordering breaks ties at
equal depth), the gap before an event at (d, s) is simply (d, s - 1), and pages
never overlap or skip.

Sync stream tokens (`s<stream_ordering>` optionally followed by `_...`) are
accepted wherever a token is: they are converted, per room, to the position of the
room's last event at or before that stream position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from homeserver.services.core.errors import invalid_param
from homeserver.storage.core.pool import Connection
from homeserver.storage.timeline import timeline
from homeserver.storage.timeline.timeline import Position

# Below every event (depths are never negative).
START = Position(-1, 0)
_INT64 = 2**63 - 1
_TOPOLOGICAL = re.compile(r"t(-?[0-9]{1,19})_(-?[0-9]{1,19})")
_STREAM = re.compile(r"s([0-9]{1,19})(?:_.*)?", re.DOTALL)
_LIMIT = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed token: a topological position, or a stream position to convert."""

    position: Position | None = None
    stream: int | None = None


def _int64(text: str) -> int:
    value = int(text)
    if not -_INT64 <= value <= _INT64:
        raise invalid_param("Pagination token out of range")
    return value


def parse_token(text: str) -> Token:
    """A token from a client, or 400 M_INVALID_PARAM for anything we did not issue."""
    match = _TOPOLOGICAL.fullmatch(text)
    if match:
        return Token(position=Position(_int64(match[1]), _int64(match[2])))
    match = _STREAM.fullmatch(text)
    if match:
        return Token(stream=_int64(match[1]))
    raise invalid_param("Invalid pagination token")


def token_for(position: Position) -> str:
    return f"t{position.depth}_{position.stream}"


def gap_before(position: Position) -> Position:
    """The gap just before the event at `position`."""
    return Position(position.depth, position.stream - 1)


async def resolve(conn: Connection, room_id: str, token: Token) -> Position:
    """The topological position a token names in this room."""
    if token.position is not None:
        return token.position
    assert token.stream is not None
    position = await timeline.position_at_stream(conn, room_id, token.stream)
    return position if position is not None else START


def parse_direction(value: str | None, default: str = "b") -> bool:
    """True for forwards (`f`), False for backwards (`b`)."""
    value = default if value is None else value
    if value not in ("b", "f"):
        raise invalid_param("dir must be 'b' or 'f'")
    return value == "f"


def parse_limit(value: str | None, *, default: int, maximum: int, minimum: int = 0) -> int:
    """A `limit` query parameter, capped at `maximum`."""
    if value is None:
        return default
    if not _LIMIT.fullmatch(value):
        raise invalid_param("limit must be an integer")
    limit = int(value)
    if limit < minimum:
        raise invalid_param(f"limit must be at least {minimum}")
    return min(limit, maximum)


def parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise invalid_param(f"{name} must be 'true' or 'false'")
