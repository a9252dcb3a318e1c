"""Server discovery decisions (federation/discovery.py) with scripted lookups."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from federation.discovery import (
    DEFAULT_PORT,
    WELL_KNOWN_DEFAULT_CACHE_MS,
    WELL_KNOWN_ERROR_CACHE_MS,
    WELL_KNOWN_MAX_CACHE_MS,
    WELL_KNOWN_MIN_CACHE_MS,
    Resolver,
    SrvRecord,
    Target,
    WellKnownResponse,
    cache_period_ms,
    parse_well_known,
    split_server_name,
)


class Network:
    """Scripted well-known and SRV answers, recording every lookup."""

    def __init__(self) -> None:
        self.well_known: dict[str, WellKnownResponse | None] = {}
        self.srv: dict[str, list[SrvRecord]] = {}
        self.lookups: list[str] = []
        self.now = 1_000_000.0

    def delegate(self, host: str, server: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"m.server": server}).encode()
        self.well_known[host] = WellKnownResponse(200, headers or {}, body)

    async def fetch_well_known(self, host: str) -> WellKnownResponse | None:
        self.lookups.append(f"well-known {host}")
        return self.well_known.get(host)

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        self.lookups.append(f"srv {name}")
        return self.srv.get(name, [])

    def resolver(self) -> Resolver:
        return Resolver(self.fetch_well_known, self.lookup_srv, lambda: self.now)


@pytest.fixture
def net() -> Network:
    return Network()


async def test_ipv4_literal_without_port(net: Network) -> None:
    assert await net.resolver().resolve("1.2.3.4") == [
        Target("1.2.3.4", DEFAULT_PORT, "1.2.3.4", "1.2.3.4")
    ]
    assert net.lookups == []


async def test_ipv4_literal_with_port(net: Network) -> None:
    assert await net.resolver().resolve("127.0.0.1:8080") == [
        Target("127.0.0.1", 8080, "127.0.0.1:8080", "127.0.0.1")
    ]
    assert net.lookups == []


async def test_ipv6_literal(net: Network) -> None:
    assert await net.resolver().resolve("[::1]") == [Target("::1", 8448, "[::1]", "::1")]
    assert await net.resolver().resolve("[2001:db8::1]:9000") == [
        Target("2001:db8::1", 9000, "[2001:db8::1]:9000", "2001:db8::1")
    ]
    assert net.lookups == []


async def test_explicit_port_skips_well_known_and_srv(net: Network) -> None:
    net.delegate("example.org", "elsewhere.org")
    assert await net.resolver().resolve("example.org:8000") == [
        Target("example.org", 8000, "example.org:8000", "example.org")
    ]
    assert net.lookups == []


async def test_well_known_to_ip_literal(net: Network) -> None:
    net.delegate("example.org", "10.0.0.5")
    assert await net.resolver().resolve("example.org") == [
        Target("10.0.0.5", 8448, "10.0.0.5", "10.0.0.5")
    ]
    net.delegate("example.com", "[::2]:4443")
    assert await net.resolver().resolve("example.com") == [Target("::2", 4443, "[::2]:4443", "::2")]


async def test_well_known_to_host_with_port(net: Network) -> None:
    net.delegate("example.org", "matrix.example.org:443")
    assert await net.resolver().resolve("example.org") == [
        Target("matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org")
    ]
    assert net.lookups == ["well-known example.org"]


async def test_well_known_to_host_without_port_uses_its_srv(net: Network) -> None:
    net.delegate("example.org", "matrix.example.org")
    net.srv["_matrix-fed._tcp.matrix.example.org"] = [SrvRecord(10, 0, 8449, "fed.example.net.")]
    assert await net.resolver().resolve("example.org") == [
        Target("fed.example.net", 8449, "matrix.example.org", "matrix.example.org")
    ]


async def test_well_known_to_host_without_port_deprecated_srv(net: Network) -> None:
    net.delegate("example.org", "matrix.example.org")
    net.srv["_matrix._tcp.matrix.example.org"] = [SrvRecord(10, 0, 8450, "old.example.net")]
    assert await net.resolver().resolve("example.org") == [
        Target("old.example.net", 8450, "matrix.example.org", "matrix.example.org")
    ]
    assert net.lookups == [
        "well-known example.org",
        "srv _matrix-fed._tcp.matrix.example.org",
        "srv _matrix._tcp.matrix.example.org",
    ]


async def test_well_known_to_host_without_port_or_srv(net: Network) -> None:
    net.delegate("example.org", "matrix.example.org")
    assert await net.resolver().resolve("example.org") == [
        Target("matrix.example.org", 8448, "matrix.example.org", "matrix.example.org")
    ]


async def test_no_well_known_srv(net: Network) -> None:
    net.srv["_matrix-fed._tcp.example.org"] = [
        SrvRecord(20, 0, 1, "backup.example.org"),
        SrvRecord(10, 5, 2, "light.example.org"),
        SrvRecord(10, 50, 3, "heavy.example.org"),
    ]
    net.srv["_matrix._tcp.example.org"] = [SrvRecord(0, 0, 9, "unused.example.org")]
    targets = await net.resolver().resolve("example.org")
    assert [(t.host, t.port) for t in targets] == [
        ("heavy.example.org", 3),
        ("light.example.org", 2),
        ("backup.example.org", 1),
    ]
    assert {(t.host_header, t.tls_name) for t in targets} == {("example.org", "example.org")}


async def test_no_well_known_deprecated_srv(net: Network) -> None:
    net.srv["_matrix._tcp.example.org"] = [SrvRecord(0, 0, 9, "legacy.example.org")]
    assert await net.resolver().resolve("example.org") == [
        Target("legacy.example.org", 9, "example.org", "example.org")
    ]


async def test_srv_dot_target_means_no_service(net: Network) -> None:
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 0, ".")]
    assert await net.resolver().resolve("example.org") == [
        Target("example.org", 8448, "example.org", "example.org")
    ]


async def test_default_port(net: Network) -> None:
    assert await net.resolver().resolve("example.org") == [
        Target("example.org", 8448, "example.org", "example.org")
    ]
    assert net.lookups == [
        "well-known example.org",
        "srv _matrix-fed._tcp.example.org",
        "srv _matrix._tcp.example.org",
    ]


@pytest.mark.parametrize(
    "response",
    [
        None,  # no answer at all
        WellKnownResponse(404, {}, b'{"m.server": "x.org"}'),
        WellKnownResponse(200, {}, b"not json"),
        WellKnownResponse(200, {}, b"[]"),
        WellKnownResponse(200, {}, b'{"m.server": 5}'),
        WellKnownResponse(200, {}, b'{"m.server": "bad name!"}'),
        WellKnownResponse(200, {}, b'{"m.server": "x.org:99999"}'),
        WellKnownResponse(200, {}, b"\xff\xfe"),
    ],
)
async def test_invalid_well_known_falls_back_and_is_cached_for_an_hour(
    net: Network, response: WellKnownResponse | None
) -> None:
    net.well_known["example.org"] = response
    resolver = net.resolver()
    assert await resolver.resolve("example.org") == [
        Target("example.org", 8448, "example.org", "example.org")
    ]
    net.delegate("example.org", "fixed.example.org:443")
    net.now += WELL_KNOWN_ERROR_CACHE_MS - 1
    assert (await resolver.resolve("example.org"))[0].host == "example.org"
    net.now += 2
    assert (await resolver.resolve("example.org"))[0].host == "fixed.example.org"
    assert net.lookups.count("well-known example.org") == 2


async def test_valid_well_known_cached_for_a_day_by_default(net: Network) -> None:
    net.delegate("example.org", "a.example.org:1")
    resolver = net.resolver()
    assert (await resolver.resolve("example.org"))[0].host == "a.example.org"
    net.delegate("example.org", "b.example.org:1")
    net.now += WELL_KNOWN_DEFAULT_CACHE_MS - 1
    assert (await resolver.resolve("example.org"))[0].host == "a.example.org"
    net.now += 2
    assert (await resolver.resolve("example.org"))[0].host == "b.example.org"


async def test_cache_control_is_honoured(net: Network) -> None:
    net.delegate("example.org", "a.example.org:1", {"cache-control": "public, max-age=600"})
    resolver = net.resolver()
    await resolver.resolve("example.org")
    net.delegate("example.org", "b.example.org:1")
    net.now += 600_000 + 1
    assert (await resolver.resolve("example.org"))[0].host == "b.example.org"


def test_cache_period_bounds_and_headers() -> None:
    now = 1_700_000_000_000.0
    assert cache_period_ms({}, now) == WELL_KNOWN_DEFAULT_CACHE_MS
    assert cache_period_ms({"cache-control": "max-age=3600"}, now) == 3_600_000
    assert cache_period_ms({"cache-control": "max-age=1"}, now) == WELL_KNOWN_MIN_CACHE_MS
    assert cache_period_ms({"cache-control": "no-store"}, now) == WELL_KNOWN_MIN_CACHE_MS
    huge = {"cache-control": "max-age=999999999"}
    assert cache_period_ms(huge, now) == WELL_KNOWN_MAX_CACHE_MS
    assert cache_period_ms({"cache-control": "private"}, now) == WELL_KNOWN_DEFAULT_CACHE_MS
    expires = format_datetime(datetime.fromtimestamp(now / 1000 + 7200, UTC), usegmt=True)
    assert abs(cache_period_ms({"expires": expires}, now) - 7_200_000) < 1000
    assert cache_period_ms({"expires": "garbage"}, now) == WELL_KNOWN_MIN_CACHE_MS
    both = {"cache-control": "max-age=900", "expires": expires}
    assert cache_period_ms(both, now) == 900_000


def test_parse_well_known() -> None:
    assert parse_well_known(b'{"m.server": "matrix.org:443"}') == "matrix.org:443"
    assert parse_well_known(b'{"m.server": "[::1]:8448"}') == "[::1]:8448"
    assert parse_well_known(b'{"m.server": ""}') is None
    assert parse_well_known(b"[" * 100_000) is None


def test_split_server_name() -> None:
    assert split_server_name("example.org") == ("example.org", None)
    assert split_server_name("example.org:80") == ("example.org", 80)
    assert split_server_name("[::1]:80") == ("[::1]", 80)
    assert split_server_name("[::1]") == ("[::1]", None)
    for bad in ("", "a b", "x:0", "x:65536", "x:", ":80"):
        with pytest.raises(ValueError):
            split_server_name(bad)


async def test_malformed_server_name_is_refused(net: Network) -> None:
    with pytest.raises(ValueError):
        await net.resolver().resolve("exa mple.org")
    assert net.lookups == []
