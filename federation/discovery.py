"""Server discovery (spec: server-server "Resolving server names"): where to connect for a
server name, which Host header to send and which name the TLS certificate must carry.

The decisions are here; the I/O is not. `Resolver` is given two lookups: one that GETs
`https://<host>/.well-known/matrix/server` (following redirects) and one that answers SRV
queries. It caches well-known answers as the spec recommends: the response's
Cache-Control/Expires within bounds, 24 hours by default, one hour for errors.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from federation.identifiers import is_valid_server_name

DEFAULT_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
WELL_KNOWN_MAX_BYTES = 50 * 1024
WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 3600 * 1000
WELL_KNOWN_MIN_CACHE_MS = 5 * 60 * 1000
WELL_KNOWN_MAX_CACHE_MS = 48 * 3600 * 1000
WELL_KNOWN_ERROR_CACHE_MS = 3600 * 1000
WELL_KNOWN_CACHE_SIZE = 10_000
SRV_SERVICES = ("_matrix-fed._tcp", "_matrix._tcp")  # the second is deprecated

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d{1,12})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Target:
    """One place to try: connect to `host:port`, send `Host: host_header`, and expect a
    certificate for `tls_name` (also the SNI name, unless it is an IP address)."""

    host: str
    port: int
    host_header: str
    tls_name: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class WellKnownResponse:
    """What the well-known GET returned after redirects: status, headers (lower-case
    names) and body. The lookup returns None instead when no response came at all."""

    status: int
    headers: Mapping[str, str]
    body: bytes


WellKnownLookup = Callable[[str], Awaitable[WellKnownResponse | None]]
SrvLookup = Callable[[str], Awaitable[list[SrvRecord]]]
Clock = Callable[[], float]  # milliseconds


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(host, port or None); IPv6 literals keep their brackets. Raises ValueError."""
    if not is_valid_server_name(server_name):
        raise ValueError(f"invalid server name {server_name!r}")
    if server_name.startswith("["):
        host, _, rest = server_name.partition("]")
        host += "]"
        port_text = rest[1:] if rest.startswith(":") else None
    else:
        host, colon, port_text_or_empty = server_name.partition(":")
        port_text = port_text_or_empty if colon else None
    if port_text is None:
        return host, None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"invalid port in {server_name!r}")
    return host, port


def ip_literal(host: str) -> str | None:
    """The address when `host` is an IP literal (IPv6 without its brackets), else None."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and candidate == host:
        return None  # the grammar requires brackets around IPv6
    return candidate


def parse_well_known(body: bytes) -> str | None:
    """The delegated server name from a well-known body, or None when it is invalid."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    delegated = data.get("m.server") if isinstance(data, dict) else None
    if not isinstance(delegated, str):
        return None
    try:
        split_server_name(delegated)
    except ValueError:
        return None
    return delegated


def cache_period_ms(headers: Mapping[str, str], now_ms: float) -> int:
    """How long to keep a valid well-known answer: what Cache-Control or Expires say,
    clamped to [5 min, 48 h]; 24 hours when they say nothing usable."""
    period: float | None = None
    control = headers.get("cache-control", "")
    if _NO_CACHE.search(control):
        period = 0
    elif match := _MAX_AGE.search(control):
        period = int(match.group(1)) * 1000
    elif "expires" in headers:
        try:
            expires = parsedate_to_datetime(headers["expires"])
            period = expires.timestamp() * 1000 - now_ms
        except (TypeError, ValueError, IndexError, OverflowError):
            period = 0  # an invalid Expires means "already expired" (RFC 9111)
    if period is None:
        return WELL_KNOWN_DEFAULT_CACHE_MS
    return int(min(max(period, WELL_KNOWN_MIN_CACHE_MS), WELL_KNOWN_MAX_CACHE_MS))


def targets_for(host: str, port: int | None, host_header: str) -> list[Target] | None:
    """Steps that need no lookup: an IP literal, or a hostname with an explicit port.
    None means the caller must go on with well-known or SRV."""
    address = ip_literal(host)
    if address is not None:
        return [Target(address, port or DEFAULT_PORT, host_header, address)]
    if port is not None:
        return [Target(host, port, host_header, host)]
    return None


def order_srv(records: list[SrvRecord]) -> list[SrvRecord]:
    """Lowest priority first, then highest weight; "." means "no service here"."""
    usable = [r for r in records if r.target not in ("", ".") and 0 < r.port < 65536]
    return sorted(usable, key=lambda r: (r.priority, -r.weight))


class Resolver:
    """Resolves server names to targets, caching well-known answers (bounded LRU)."""

    def __init__(self, well_known: WellKnownLookup, srv: SrvLookup, clock: Clock) -> None:
        self._well_known = well_known
        self._srv = srv
        self._clock = clock
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    async def resolve(self, server_name: str) -> list[Target]:
        """The targets to try in order (more than one only from SRV). Raises ValueError
        for a malformed server name."""
        host, port = split_server_name(server_name)
        direct = targets_for(host, port, server_name)
        if direct is not None:
            return direct
        delegated = await self.delegated_server(host)
        if delegated is None:
            return await self._srv_or_default(host)
        d_host, d_port = split_server_name(delegated)
        direct = targets_for(d_host, d_port, delegated)
        if direct is not None:
            return direct
        return await self._srv_or_default(d_host)

    async def delegated_server(self, host: str) -> str | None:
        """The `m.server` of `host`'s well-known, from the cache when still fresh."""
        now = self._clock()
        cached = self._cache.get(host)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(host)
            return cached[0]
        response = await self._well_known(host)
        delegated: str | None = None
        period = WELL_KNOWN_ERROR_CACHE_MS
        if response is not None and response.status == 200:
            delegated = parse_well_known(response.body)
            if delegated is not None:
                period = cache_period_ms(response.headers, now)
        self._cache[host] = (delegated, now + period)
        self._cache.move_to_end(host)
        while len(self._cache) > WELL_KNOWN_CACHE_SIZE:
            self._cache.popitem(last=False)
        return delegated

    async def _srv_or_default(self, host: str) -> list[Target]:
        for service in SRV_SERVICES:
            records = order_srv(await self._srv(f"{service}.{host}"))
            if records:
                return [Target(r.target.rstrip("."), r.port, host, host) for r in records]
        return [Target(host, DEFAULT_PORT, host, host)]
