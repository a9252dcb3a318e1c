"""Grammar of the identifiers the protocol checks (spec appendix "Identifier Grammar").

Signature checks need the server part of user and event ids, and a server name taken
from hostile input must be well-formed before it is used as a key or a hostname: that is
`server_name_of`. The auth rules instead read identifiers as leniently as the other
implementations do (`domain_of`, `is_user_id`), since a stricter reading would split the
room between servers that accept an event and servers that reject it.
"""

from __future__ import annotations

import re

_SERVER_NAME = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?",
)
_ROOM_VERSION = re.compile(r"[a-z0-9.-]{1,32}")


def is_valid_server_name(name: object) -> bool:
    """Whether `name` is `hostname[:port]` (DNS name, IPv4 or bracketed IPv6)."""
    return isinstance(name, str) and _SERVER_NAME.fullmatch(name) is not None


def is_valid_room_version_id(identifier: object) -> bool:
    """Whether `identifier` fits the room version grammar (known to us or not)."""
    return isinstance(identifier, str) and _ROOM_VERSION.fullmatch(identifier) is not None


def server_name_of(identifier: object, sigil: str) -> str | None:
    """The server name in `<sigil>localpart:server`, or None when it has none or is bad."""
    if not isinstance(identifier, str) or not identifier.startswith(sigil):
        return None
    _, colon, server = identifier.partition(":")
    if not colon or not is_valid_server_name(server):
        return None
    return server


def domain_of(identifier: str) -> str:
    """Everything after the first ':' of a user, room or v1 event id, unchecked: how the
    auth rules compare domains. Use `server_name_of` where the name must be valid."""
    return identifier.partition(":")[2]


def is_user_id(value: object) -> bool:
    """A loose user id check (sigil, a ':' and the 255-byte limit), as lenient as the
    implementations whose events we must accept."""
    return (
        isinstance(value, str)
        and value.startswith("@")
        and ":" in value
        and len(value.encode("utf-8")) <= 255
    )


def room_id_for_create_event(create_event_id: str) -> str:
    """A v12 room's id, derived from its create event's id ("$x" -> "!x")."""
    return "!" + create_event_id[1:]


def create_event_id_for_room(room_id: str) -> str | None:
    """The id of a v12 room's create event, which its room id is derived from ("!x" ->
    "$x"); None when `room_id` is not a room id."""
    if not room_id.startswith("!") or len(room_id) < 2:
        return None
    return "$" + room_id[1:]
