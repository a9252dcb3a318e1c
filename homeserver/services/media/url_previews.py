"""Link previews (`/media/preview_url`): the server fetches a page a user names and
answers with its OpenGraph summary, its image stored in the media repository.

Fetching arbitrary URLs on a user's behalf is a way into the server's own network, so
it is off unless configured, and when on: http(s) only; every hop of a redirect chain
checked again; addresses filtered as for federation (the filter sits in the resolver
the connection uses, so the address connected to is the address checked, whatever DNS
answers the next time); a size limit, a time limit over the whole fetch (a server
dribbling bytes gets nowhere), and a per-user rate limit on fetches. Answers, including
failures, are cached in the database, so a popular link is fetched once per expiry.
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, forbidden
from homeserver.services.media.remote import filename_from_disposition
from homeserver.services.media.repository import MediaRepository, check_filename
from homeserver.services.media.url_preview_html import decode_html, parse_html
from homeserver.services.remote.client import (
    AddressRefused,
    FilteringResolver,
    literal_address_refused,
)
from homeserver.storage.core.pool import Database
from homeserver.storage.media import url_previews as store
from homeserver.storage.media.files import MediaFiles

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_URL_LENGTH = 4096
CHUNK = 64 * 1024
PREVIEW_LIFETIME_MS = 24 * 60 * 60 * 1000
ERROR_LIFETIME_MS = 60 * 60 * 1000
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
USER_AGENT = "Mozilla/5.0 (compatible; homeserver URL preview)"


class FetchFailed(Exception):
    """The page could not be had: no answer, an error status, too large, too slow."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str  # lower case, without parameters
    content_type_header: str | None
    disposition: str | None
    body: bytes | None  # None when the type is neither a page nor an image


def normalise_url(raw: str) -> URL:
    """The URL to fetch (and cache under), without its fragment; 400 when it is not an
    absolute http(s) URL."""
    if len(raw) > MAX_URL_LENGTH:
        raise ServiceError(400, "M_INVALID_PARAM", "url is too long")
    try:
        url = URL(raw.strip())
        host = url.host
    except (ValueError, TypeError):
        raise ServiceError(400, "M_INVALID_PARAM", "url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not host:
        raise ServiceError(400, "M_INVALID_PARAM", "url must be an absolute http(s) URL")
    return url.with_fragment(None)


def image_info(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, MIME type) when Pillow recognises the bytes as an image."""
    from PIL import Image  # loaded by the first preview of an image, not at start

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mime = Image.MIME.get(image.format or "")
    except Exception:  # hostile bytes may upset any of the decoders in any way
        return None
    return (width, height, mime) if mime else None


class UrlPreviewService:
    """`hs.url_previews.preview(url, ...)`; the HTTP session is made on first use."""

    def __init__(
        self,
        db: Database,
        files: MediaFiles,
        media: MediaRepository,
        *,
        enabled: bool,
        max_size: int,
        timeout_s: float,
        allowed_ranges: Sequence[str] = (),
        url_blacklist: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.files = files
        self.media = media
        self.enabled = enabled
        self.max_size = max_size
        self.timeout_s = timeout_s
        self._allowed = [ipaddress.ip_network(r, strict=False) for r in allowed_ranges]
        self._blacklist = tuple(p.lower() for p in url_blacklist)
        self._session: aiohttp.ClientSession | None = None
        # One fetch per URL in this process, however many users ask at once.
        self._inflight: dict[str, asyncio.Task[store.CachedPreview]] = {}

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=100, ttl_dns_cache=60, resolver=FilteringResolver(self._allowed)
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def preview(
        self,
        raw_url: str,
        *,
        before_fetch: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """The preview of `raw_url`, from the cache when fresh; `before_fetch` (the
        caller's rate limit) runs only when the origin must be asked."""
        if not self.enabled:
            raise ServiceError(404, "M_UNRECOGNIZED", "URL previews are disabled")
        url = normalise_url(raw_url)
        self._check_target(url)
        key = str(url)
        async with self.db.pool.connection() as conn:
            cached = await store.get_preview(conn, key, now_ms())
        if cached is None:
            if before_fetch is not None:
                await before_fetch()
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._fetch_and_cache(url), name=f"preview {key}")
                self._inflight[key] = task
                task.add_done_callback(lambda done: self._forget(key, done))
            # Shielded: one client going away must not cancel the others' fetch.
            cached = await asyncio.shield(task)
        if cached.preview is None:
            raise ServiceError(502, cached.errcode or "M_UNKNOWN", cached.error or "")
        return cached.preview

    def _forget(self, key: str, task: asyncio.Task[store.CachedPreview]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not logged

    def _check_target(self, url: URL) -> None:
        """403 for a URL this server will not fetch: a blacklisted host or path, or an
        address literal outside the public internet and the whitelist. (Names are
        checked at connection time, by the resolver.)"""
        host = (url.host or "").lower()
        for pattern in self._blacklist:
            if fnmatch.fnmatchcase(host, pattern) or fnmatch.fnmatchcase(host + url.path, pattern):
                raise forbidden("This URL may not be previewed")
        if literal_address_refused(host, self._allowed):
            raise forbidden("This URL's address may not be previewed")

    async def _fetch_and_cache(self, url: URL) -> store.CachedPreview:
        """Fetch, build and cache the preview; a failure is cached too, for less time.
        Refusals (403) are not cached: they follow from configuration, not the page."""
        now = now_ms()
        preview: dict[str, Any] | None = None
        error: str | None = None
        try:
            preview = await self._build(url)
            expires = now + PREVIEW_LIFETIME_MS
        except FetchFailed as exc:
            log.info("url preview of %s failed: %s", url, exc)
            error = f"Cannot preview this URL: {exc}"
            expires = now + ERROR_LIFETIME_MS
        errcode = None if error is None else "M_UNKNOWN"
        async with self.db.pool.connection() as conn:
            await store.put_preview(
                conn,
                str(url),
                fetched_ts=now,
                expires_ts=expires,
                preview=preview,
                errcode=errcode,
                error=error,
            )
        return store.CachedPreview(str(url), now, expires, preview, errcode, error)

    async def _build(self, url: URL) -> dict[str, Any]:
        page = await self._fetch(url)
        if page.body is None:
            filename = filename_from_disposition(page.disposition)
            return {"og:title": filename} if filename else {}
        if page.content_type.startswith("image/"):
            return await self._store_image(page) or {}
        decoded = await asyncio.to_thread(decode_html, page.body, page.content_type_header)
        og = await asyncio.to_thread(parse_html, decoded, page.url)
        image_url = og.pop("og:image", None)
        for key in [k for k in og if k.startswith("og:image:")]:
            del og[key]  # the page's claims about its image; ours come from the bytes
        if image_url:
            try:
                image = await self._fetch(URL(image_url), images_only=True)
            except (FetchFailed, ServiceError, ValueError) as exc:
                log.info("url preview of %s: no image from %s: %s", url, image_url, exc)
            else:
                og.update(await self._store_image(image) or {})
        return og

    async def _store_image(self, page: Fetched) -> dict[str, Any] | None:
        """Keep a fetched image in the media repository; its preview keys, or None when
        the bytes are not an image after all."""
        assert page.body is not None
        info = await asyncio.to_thread(image_info, page.body)
        if info is None:
            return None
        width, height, mime = info
        sha256, size = await self.files.write_bytes(page.body)
        name = URL(page.url).name or None
        try:
            filename = check_filename(name)
        except ServiceError:
            filename = None
        mxc = await self.media.store_fetched(sha256, size, mime, filename)
        return {
            "og:image": mxc,
            "og:image:type": mime,
            "og:image:width": width,
            "og:image:height": height,
            "matrix:image:size": size,
        }

    async def _fetch(self, url: URL, *, images_only: bool = False) -> Fetched:
        """GET `url`, following redirects (each target checked like the first), within
        the time limit; the body is read only for pages and images, up to the size
        limit. 403 ServiceError for a refused address, FetchFailed for the rest."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url, images_only)
        except TimeoutError:
            raise FetchFailed(f"no complete answer within {self.timeout_s:g} s") from None

    async def _follow(self, url: URL, images_only: bool) -> Fetched:
        for _ in range(MAX_REDIRECTS + 1):
            if url.scheme not in ("http", "https") or not url.host:
                raise FetchFailed("redirected to a URL that is not http(s)")
            self._check_target(url)
            try:
                async with self._http().get(
                    url,
                    allow_redirects=False,
                    headers={
                        "Accept": "image/*" if images_only else "text/html,image/*;q=0.9,*/*;q=0.5",
                        "Accept-Encoding": "identity",
                    },
                ) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchFailed(f"{resp.status} without a Location")
                        url = url.join(URL(location)).with_fragment(None)
                        continue
                    if resp.status != 200:
                        raise FetchFailed(f"the site answered {resp.status}")
                    return await self._read(url, resp, images_only)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, AddressRefused):
                    raise forbidden("This URL's address may not be previewed") from None
                raise FetchFailed(f"cannot connect: {exc.os_error}") from None
            except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:
                raise FetchFailed(f"bad answer: {type(exc).__name__}") from None
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, url: URL, resp: aiohttp.ClientResponse, images_only: bool) -> Fetched:
        content_type = resp.content_type.lower()
        wanted = content_type.startswith("image/") or (
            not images_only and content_type in HTML_TYPES
        )
        fetched = Fetched(
            str(url),
            content_type,
            resp.headers.get("Content-Type"),
            resp.headers.get("Content-Disposition"),
            None,
        )
        if not wanted:
            if images_only:
                raise FetchFailed(f"the image is {content_type}")
            return fetched
        if resp.content_length is not None and resp.content_length > self.max_size:
            raise FetchFailed(f"larger than {self.max_size} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > self.max_size:
                raise FetchFailed(f"larger than {self.max_size} bytes")
            chunks.append(chunk)
        return Fetched(
            fetched.url,
            content_type,
            fetched.content_type_header,
            fetched.disposition,
            b"".join(chunks),
        )
