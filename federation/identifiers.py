"""Grammar of the identifiers the protocol checks (spec appendix "Identifier Grammar").

Signature checks need the server part of user and event ids, and a server name taken
from hostile input must be well-formed before it is used as a key or a hostname.
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
