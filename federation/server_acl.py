"""Server ACLs (`m.room.server_acl`): which servers may take part in a room.

The spec's order (client-server "Server Access Control Lists (ACLs) for rooms", and the
event's schema): no ACL event allows everyone; an IP-literal server name is denied when
`allow_ip_literals` is false; a name matching a `deny` glob is denied; a name matching an
`allow` glob is allowed; anything else is denied, so an ACL without `allow` shuts out
every server. Names are matched without their port, and the globs (`*` any run of
characters, `?` exactly one) are case-insensitive.

Room admins on any server write this content, so it is read leniently (a wrong type
falls back to the field's default, non-string entries are skipped, as other servers do)
and matched in linear-backtracking time: a crafted glob such as `*a*a*a*a*b` must not
cost a regex engine's exponential search on every federation request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVER_ACL = "m.room.server_acl"
SERVER_ACL_KEY = (SERVER_ACL, "")
# Dotted digits are never a DNS name (no top-level domain is numeric), whatever
# shorthand form a resolver might read them as.
_DOTTED_DIGITS = re.compile(r"[0-9.]+")


def host_of(server_name: str) -> str:
    """`server_name` without its port; an IPv6 literal keeps its brackets."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name if end == -1 else server_name[: end + 1]
    return server_name.partition(":")[0]


def is_ip_literal(host: str) -> bool:
    """Whether a port-less server name is an IP address rather than a DNS name. The
    grammar admits IPv6 only in brackets, so anything bracketed counts."""
    if host.startswith("["):
        return True
    if _DOTTED_DIGITS.fullmatch(host):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _squeeze(glob: str) -> str:
    """The glob, lower-cased, with runs of `*` made one (they match the same)."""
    return re.sub(r"\*+", "*", glob.lower())


def glob_matches(glob: str, text: str) -> bool:
    """Whether the whole of `text` matches `glob` (already lower-cased and squeezed by
    `_squeeze`). On a mismatch after a `*`, the `*` takes one more character and matching
    resumes from there: O(len(glob) * len(text)) at worst, never exponential."""
    g = t = 0
    star = -1  # position of the last `*` seen in the glob
    resume = 0  # where in `text` that `*` will try again from
    while t < len(text):
        if g < len(glob) and glob[g] != "*" and (glob[g] == "?" or glob[g] == text[t]):
            g += 1
            t += 1
        elif g < len(glob) and glob[g] == "*":
            star, resume = g, t
            g += 1
        elif star >= 0:
            resume += 1
            g, t = star + 1, resume
        else:
            return False
    while g < len(glob) and glob[g] == "*":
        g += 1
    return g == len(glob)


def _globs(value: Any) -> tuple[str, ...]:
    """The string entries of a list field; anything else contributes nothing."""
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(_squeeze(item) for item in value if isinstance(item, str)))


@dataclass(frozen=True, slots=True)
class ServerAcl:
    """A parsed ACL event content; `allows(server_name)` is the spec's decision."""

    allow_ip_literals: bool
    allow: tuple[str, ...]
    deny: tuple[str, ...]

    def allows(self, server_name: str) -> bool:
        host = host_of(server_name).lower()
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if _any_match(self.deny, host):
            return False
        return _any_match(self.allow, host)


def _any_match(globs: Iterable[str], host: str) -> bool:
    return any(glob_matches(glob, host) for glob in globs)


def parse_acl(content: Any) -> ServerAcl:
    """The ACL of an `m.room.server_acl` content, read as the spec's defaults say:
    `allow_ip_literals` true unless it is the boolean false, `allow` and `deny` empty
    unless they are lists (then only their strings count)."""
    if not isinstance(content, Mapping):
        content = {}
    literals = content.get("allow_ip_literals", True)
    return ServerAcl(
        allow_ip_literals=literals if isinstance(literals, bool) else True,
        allow=_globs(content.get("allow")),
        deny=_globs(content.get("deny")),
    )


def server_allowed(content: Any, server_name: str) -> bool:
    """Whether the ACL with this content lets `server_name` (port or not) in."""
    return parse_acl(content).allows(server_name)
