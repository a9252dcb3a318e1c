"""Outbound federation HTTP: find the destination (federation/discovery.py), sign the
request with X-Matrix, send JSON, and read a bounded JSON answer.

One aiohttp session serves every destination; its connector pools connections per
(host, port, TLS name), so each destination keeps its own warm connections. Failures
surface as `FederationError`s: `RequestFailed` when the destination answered with an
error status (it carries status and errcode), `Unreachable` when no answer came.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from federation.discovery import (
    WELL_KNOWN_MAX_BYTES,
    WELL_KNOWN_PATH,
    Resolver,
    SrvLookup,
    SrvRecord,
    Target,
    WellKnownLookup,
    WellKnownResponse,
)
from federation.keys import SigningKey
from federation.xmatrix import sign_request
from homeserver.services.core.clock import now_ms

if TYPE_CHECKING:
    import dns.asyncresolver

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
WELL_KNOWN_TIMEOUT = 10.0
WELL_KNOWN_MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 50 * 1024 * 1024
MAX_URL_REDIRECTS = 5
DNS_TIMEOUT = 5.0

T = TypeVar("T")


class FederationError(Exception):
    """A request to another server failed."""

    def __init__(self, destination: str, message: str) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination


class Unreachable(FederationError):
    """No usable answer: resolution, connection, TLS, timeout, oversized or non-JSON body."""


class RequestFailed(FederationError):
    """The destination answered with an error status."""

    def __init__(self, destination: str, status: int, errcode: str | None, error: str) -> None:
        super().__init__(destination, f"{status} {errcode or ''} {error}".strip())
        self.status = status
        self.errcode = errcode
        self.error = error


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_allowed(address: str, allowed: Sequence[IpNetwork]) -> bool:
    """Public addresses, and non-public ones only inside an allowed range.

    A request from another server can make us connect to any name it chooses (its
    own, a well-known delegation, a key notary): without this, anyone could use the
    homeserver to reach hosts on its private network.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global or any(ip in network for network in allowed)


def literal_address_refused(host: str, allowed: Sequence[IpNetwork]) -> bool:
    """A host that is an IP literal outside the usable addresses. Names are checked by
    `FilteringResolver` as they are connected to; literals never reach a resolver."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address_allowed(host, allowed)


class AddressRefused(OSError):
    """A name resolved only to addresses the caller may not connect to."""


class FilteringResolver(aiohttp.abc.AbstractResolver):
    """The default resolver, minus the addresses federation may not connect to."""

    def __init__(self, allowed: Sequence[IpNetwork]) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        usable = [r for r in found if address_allowed(r["host"], self._allowed)]
        if not usable:
            raise AddressRefused(f"{host} resolves only to addresses federation may not use")
        return usable

    async def close(self) -> None:
        await self._inner.close()


class FederationClient:
    """Signed JSON requests to other servers; `start()` before use, `close()` after."""

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        *,
        verify_tls: bool = True,
        use_tls: bool = True,
        ca_file: str | None = None,
        well_known_lookup: WellKnownLookup | None = None,
        srv_lookup: SrvLookup | None = None,
        allowed_ranges: Sequence[str] = (),
    ) -> None:
        self.server_name = server_name
        self._allowed = [ipaddress.ip_network(r, strict=False) for r in allowed_ranges]
        self.signing_key = signing_key
        self.scheme = "https" if use_tls else "http"
        self._ssl: ssl.SSLContext | bool = _tls_context(ca_file) if verify_tls else False
        self.resolver = Resolver(
            well_known_lookup or self._fetch_well_known,
            srv_lookup or self._lookup_srv,
            now_ms,
        )
        self._session: aiohttp.ClientSession | None = None
        self._dns: dns.asyncresolver.Resolver | None = None
        self._on_success: list[Callable[[str], None]] = []
        self._on_failure: list[Callable[[str, str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Called with a destination's name after it answered successfully (the sender
        then catches up with it)."""
        self._on_success.append(listener)

    def add_failure_listener(self, listener: Callable[[str, str], None]) -> None:
        """Called with a destination's name and the error when a request could not reach
        it (every request backs off from the destination, and the admin API lists it)."""
        self._on_failure.append(listener)

    @contextmanager
    def _reporting(self, destination: str, report: bool = True) -> Iterator[None]:
        try:
            yield
        except Unreachable as exc:
            if report:
                for listener in self._on_failure:
                    listener(destination, str(exc))
            raise

    async def start(self) -> None:
        if self._ssl is False and self.scheme == "https":
            log.warning("federation: NOT verifying other servers' TLS certificates")
        if self.scheme == "http":
            log.warning("federation: talking plain HTTP to other servers (tests only)")
        connector = aiohttp.TCPConnector(
            limit=1000,
            limit_per_host=10,
            ttl_dns_cache=300,
            resolver=FilteringResolver(self._allowed),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            headers={"User-Agent": "homeserver"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(
        self, destination: str, path: str, query: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        return await self.request("GET", destination, path, query=query, **kw)

    async def put_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("PUT", destination, path, content=content, **kw)

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("POST", destination, path, content=content, **kw)

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        content: Any = None,
        signed: bool = True,
        time_limit: float = DEFAULT_TIMEOUT,
        max_size: int = MAX_RESPONSE_BYTES,
        report_failure: bool = True,
    ) -> Any:
        """Send a request and return the parsed JSON answer.

        `path` is already percent-encoded (use `quote_segment` for ids in it); `query`
        values may be lists. The X-Matrix signature covers exactly the path and query
        that go on the wire. `report_failure=False` keeps a failure from the failure
        listeners, for the sender, which records its own.
        """
        uri = path
        if query:
            uri += "?" + urlencode(query, doseq=True, quote_via=quote)
        body = None if content is None else orjson.dumps(content)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = sign_request(
                method, uri, self.server_name, destination, self.signing_key, content
            )

        async def read_json(resp: aiohttp.ClientResponse) -> Any:
            raw = await _read_limited(resp, max_size, destination)
            return _decode(destination, resp.status, raw)

        with self._reporting(destination, report_failure):
            try:
                targets = await self.resolver.resolve(destination)
            except ValueError as exc:
                raise Unreachable(destination, str(exc)) from None
            try:
                async with asyncio.timeout(time_limit):
                    result = await self._send(
                        destination, targets, method, uri, headers, body, read_json
                    )
            except TimeoutError:
                raise Unreachable(destination, f"no answer within {time_limit:g} s") from None
        for listener in self._on_success:
            listener(destination)
        return result

    async def request_stream(
        self,
        destination: str,
        path: str,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        query: Mapping[str, Any] | None = None,
        signed: bool = True,
        time_limit: float = DEFAULT_TIMEOUT,
    ) -> T:
        """A GET whose answer `read` consumes as it arrives (media, which is not JSON and
        may be large): `read` sees every status and decides; it may be called again for
        the next address if a connection fails, so it must start afresh each time."""
        uri = path
        if query:
            uri += "?" + urlencode(query, doseq=True, quote_via=quote)
        headers = {"Accept": "*/*"}
        if signed:
            headers["Authorization"] = sign_request(
                "GET", uri, self.server_name, destination, self.signing_key, None
            )
        with self._reporting(destination):
            try:
                targets = await self.resolver.resolve(destination)
            except ValueError as exc:
                raise Unreachable(destination, str(exc)) from None
            try:
                async with asyncio.timeout(time_limit):
                    result = await self._send(destination, targets, "GET", uri, headers, None, read)
            except TimeoutError:
                raise Unreachable(destination, f"no answer within {time_limit:g} s") from None
        for listener in self._on_success:
            listener(destination)
        return result

    async def fetch_url(
        self,
        destination: str,
        url: str,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        """A plain GET of a URL another server pointed us to (a media answer's
        `Location`), following its redirects: every hop is held to the addresses
        federation may use (names by the resolver, literals here) and to http(s). The
        caller's time limit and `read`'s size limit cover the whole chain."""
        try:
            current = URL(url)
        except ValueError:
            raise Unreachable(destination, "a malformed URL") from None
        for _ in range(MAX_URL_REDIRECTS + 1):
            if current.scheme not in ("http", "https") or not current.host:
                raise Unreachable(destination, f"refusing to fetch {current.scheme}: URLs")
            if literal_address_refused(current.host, self._allowed):
                raise Unreachable(destination, f"{current.host}: an address federation may not use")
            try:
                async with self._http().get(
                    current,
                    headers={"Accept": "*/*"},
                    ssl=self._ssl,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT),
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status not in (301, 302, 303, 307, 308) or location is None:
                        return await read(resp)
            except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
                raise Unreachable(
                    destination, f"{current.host}: {exc or type(exc).__name__}"
                ) from None
            try:
                current = current.join(URL(location))
            except ValueError:
                raise Unreachable(destination, "a malformed redirect") from None
        raise Unreachable(destination, f"more than {MAX_URL_REDIRECTS} redirects")

    async def _send(
        self,
        destination: str,
        targets: list[Target],
        method: str,
        uri: str,
        headers: dict[str, str],
        body: bytes | None,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        last_error = "no address to try"
        for target in targets:
            if literal_address_refused(target.host, self._allowed):
                last_error = f"{target.host}: an address federation may not use"
                continue
            url = URL(f"{self.scheme}://{_url_host(target.host)}:{target.port}{uri}", encoded=True)
            try:
                async with self._http().request(
                    method,
                    url,
                    data=body,
                    headers={**headers, "Host": target.host_header},
                    ssl=self._ssl,
                    server_hostname=target.tls_name if self.scheme == "https" else None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT),
                ) as resp:
                    return await read(resp)
            except (aiohttp.ClientConnectionError, ssl.SSLError, OSError) as exc:
                # Connection-level failures: the next SRV target may do better.
                cause = getattr(exc, "os_error", None) or exc
                last_error = f"{target.host}:{target.port}: {cause or type(exc).__name__}"
            except aiohttp.ClientError as exc:
                raise Unreachable(destination, f"bad response: {exc}") from None
        raise Unreachable(destination, last_error)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("FederationClient.start() was not called")
        return self._session

    async def _fetch_well_known(self, host: str) -> WellKnownResponse | None:
        """GET the well-known file, following a bounded number of redirects."""
        url = URL(f"{self.scheme}://{_url_host(host)}{WELL_KNOWN_PATH}", encoded=True)
        try:
            async with self._http().get(
                url,
                ssl=self._ssl,
                max_redirects=WELL_KNOWN_MAX_REDIRECTS,
                timeout=aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT),
            ) as resp:
                raw = await _read_limited(resp, WELL_KNOWN_MAX_BYTES, host)
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return WellKnownResponse(resp.status, headers, raw)
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError, FederationError) as exc:
            log.debug("no well-known for %s: %s", host, exc)
            return None

    async def _lookup_srv(self, name: str) -> list[SrvRecord]:
        """SRV records, or none on any DNS failure (the spec then falls back to port 8448).
        dnspython (2 MiB) is imported by the first lookup, not by a server that never
        federates."""
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        try:
            if self._dns is None:
                self._dns = dns.asyncresolver.Resolver()
                self._dns.cache = dns.resolver.LRUCache()  # honours each record's TTL
                self._dns.lifetime = DNS_TIMEOUT
            answer = await self._dns.resolve(name, "SRV")
        except dns.exception.DNSException as exc:
            log.debug("no SRV record %s: %s", name, exc)
            return []
        return [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
            for r in answer
        ]


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus those of `ca_file` (a private federation's CA)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


def quote_segment(value: str) -> str:
    """Percent-encode an id for use as one path segment."""
    return quote(value, safe="")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, destination: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise Unreachable(destination, f"response of {resp.content_length} bytes is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise Unreachable(destination, f"response over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(destination: str, status: int, raw: bytes) -> Any:
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
        if 200 <= status < 300:
            raise Unreachable(destination, f"{status} answer is not JSON") from None
    if 200 <= status < 300:
        return data
    errcode = data.get("errcode") if isinstance(data, dict) else None
    error = data.get("error") if isinstance(data, dict) else None
    raise RequestFailed(
        destination,
        status,
        errcode if isinstance(errcode, str) else None,
        error if isinstance(error, str) else raw[:200].decode("utf-8", "replace"),
    )
