"""Fetching other servers' media for our users, and caching it.

The origin is asked over federation (`/_matrix/federation/v1/media/download` or
`/thumbnail`, signed, answered as multipart/mixed); a server that does not know that
endpoint (404 or 405 M_UNRECOGNIZED) is asked at the legacy `/_matrix/media/v3/...`
with `allow_remote=false`. The content part of a multipart answer may instead name a
URL in `Location` (a CDN): it is fetched, redirects followed, under the same limits.
The answer is hostile input: its size is bounded while it streams to disk, its content
type is checked, the whole exchange (redirects included) has one time limit, only
addresses federation may use are connected to, and a malformed answer is a 502, never
a 500 or a partial file in the cache.

One process of a cluster at a time fetches a given media (or thumbnail) from its
origin: the one holding the fetch's advisory lock, on a connection of this service's
own (so a process that dies lets go). The others look for the row it stores, and once
it lets go without one (failed, or dead) the next to take the lock fetches itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

import aiohttp
import orjson

from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, not_found
from homeserver.services.core.single_flight import SingleFlight
from homeserver.services.media.repository import check_filename, clean_content_type, too_large
from homeserver.services.remote.client import (
    FederationClient,
    FederationError,
    RequestFailed,
    Unreachable,
    quote_segment,
)
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Database
from homeserver.storage.media import media as store
from homeserver.storage.media.files import ContentTooLarge, FileWriter, MediaFiles

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024
# How long the origin may take to start answering a media id not yet uploaded there.
REMOTE_TIMEOUT_MS = 20_000
# How often a process waiting on another's fetch of the same media looks again.
CLUSTER_POLL_S = 0.1

T = TypeVar("T")

_FILENAME_EXT = re.compile(r"filename\*\s*=\s*utf-8''([^;\s]+)", re.IGNORECASE)
_FILENAME_QUOTED = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_FILENAME_TOKEN = re.compile(r"filename\s*=\s*([^;\s\"]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Fetched:
    sha256: str
    size: int
    content_type: str
    filename: str | None


class NotMultipart(Exception):
    """The federation answer was not the two-part multipart/mixed the spec requires."""


def filename_from_disposition(header: str | None) -> str | None:
    """The filename a Content-Disposition header gives (`filename*` preferred), or None
    when it gives none we would be willing to serve again."""
    if not header:
        return None
    name: str | None = None
    if match := _FILENAME_EXT.search(header):
        try:
            name = unquote(match.group(1), errors="strict")
        except UnicodeDecodeError:
            return None
    elif match := _FILENAME_QUOTED.search(header):
        name = re.sub(r"\\(.)", r"\1", match.group(1))
    elif match := _FILENAME_TOKEN.search(header):
        name = match.group(1)
    try:
        return check_filename(name)
    except ServiceError:
        return None


async def _failure(resp: aiohttp.ClientResponse, destination: str) -> RequestFailed:
    """An error answer as RequestFailed, reading at most a small bounded body."""
    raw = await resp.content.read(MAX_ERROR_BYTES)
    errcode: str | None = None
    error = raw[:200].decode("utf-8", "replace")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("errcode"), str):
            errcode = body["errcode"]
        if isinstance(body.get("error"), str):
            error = body["error"]
    return RequestFailed(destination, resp.status, errcode, error)


class RemoteMedia:
    """Remote media fetched once in the cluster at a time, then served from the cache."""

    def __init__(
        self,
        db: Database,
        files: MediaFiles,
        client: FederationClient,
        *,
        max_size: int,
        time_limit_s: float,
        authenticated_media: bool = True,
    ) -> None:
        self.db = db
        self.files = files
        self.client = client
        self.max_size = max_size
        self.time_limit_s = time_limit_s
        # Cached while on: served to our users only on the authenticated paths.
        self.authenticated_media = authenticated_media
        self._fetches: SingleFlight[tuple[str, str], store.MediaRow] = SingleFlight()
        self._locks = DedicatedConnection(db)

    async def close(self) -> None:
        await self._locks.close()

    async def fetch(self, origin: str, media_id: str) -> store.MediaRow:
        """The cached row of remote media, fetching it from its origin first; waits for
        a fetch of the same media already under way (here or in another process)
        instead of starting another."""
        return await self._fetches.run(
            (origin, media_id),
            lambda: self.once_in_cluster(
                f"media {origin}/{media_id}",
                lambda: self._stored(origin, media_id),
                lambda: self._fetch_and_store(origin, media_id),
            ),
        )

    async def once_in_cluster(
        self,
        key: str,
        stored: Callable[[], Awaitable[T | None]],
        fetch: Callable[[], Awaitable[T]],
    ) -> T:
        """`fetch()` by the process holding `key`'s lock; what another process `stored()`
        while this one waited for the lock, when it did."""
        deadline = time.monotonic() + 2 * self.time_limit_s + 5
        while True:
            if await self._locks.run(lambda conn: store.try_lock_fetch(conn, key)):
                try:
                    found = await stored()
                    return found if found is not None else await fetch()
                finally:
                    # Not to be cut short: a lock left behind would stall the others.
                    await asyncio.shield(
                        self._locks.run_once(lambda conn: store.unlock_fetch(conn, key))
                    )
            found = await stored()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise ServiceError(502, "M_UNKNOWN", "Cannot fetch the media from its server")
            await asyncio.sleep(CLUSTER_POLL_S)

    async def _stored(self, origin: str, media_id: str) -> store.MediaRow | None:
        async with self.db.pool.connection() as conn:
            return await store.get_media(conn, origin, media_id)

    async def _fetch_and_store(self, origin: str, media_id: str) -> store.MediaRow:
        try:
            fetched = await self._download(origin, media_id)
        except ContentTooLarge:
            raise too_large("Remote content is too large to serve", 502) from None
        except RequestFailed as exc:
            if exc.status == 404:
                raise not_found("Unknown media ID") from None
            if exc.errcode == "M_NOT_YET_UPLOADED":
                raise ServiceError(
                    504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded"
                ) from None
            if exc.errcode == "M_TOO_LARGE":
                raise too_large("Remote content is too large to serve", 502) from None
            log.info("media %s/%s: origin refused: %s", origin, media_id, exc)
            raise ServiceError(502, "M_UNKNOWN", "The media's server refused it") from None
        except FederationError as exc:
            log.info("media %s/%s: cannot fetch: %s", origin, media_id, exc)
            raise ServiceError(502, "M_UNKNOWN", "Cannot fetch the media from its server") from None
        async with self.db.pool.connection() as conn:
            await store.insert_media(
                conn,
                origin,
                media_id,
                uploader=None,
                content_type=fetched.content_type,
                filename=fetched.filename,
                size=fetched.size,
                sha256=fetched.sha256,
                now_ms=now_ms(),
                authenticated=self.authenticated_media,
            )
            # Another process may have cached it first: serve what the table says.
            row = await store.get_media(conn, origin, media_id)
        assert row is not None
        return row

    async def fetch_thumbnail(self, origin: str, media_id: str, params: dict[str, str]) -> Fetched:
        """A thumbnail made by the origin (`params`: width, height, method, animated),
        stored as a file; raises FederationError or ContentTooLarge."""
        return await self._download(origin, media_id, "thumbnail", params)

    async def _download(
        self,
        origin: str,
        media_id: str,
        kind: str = "download",
        params: dict[str, str] | None = None,
    ) -> Fetched:
        """Federation endpoint first, the legacy one when the origin does not know it."""
        query = {**(params or {}), "timeout_ms": str(REMOTE_TIMEOUT_MS)}
        try:
            return await self.client.request_stream(
                origin,
                f"/_matrix/federation/v1/media/{kind}/{quote_segment(media_id)}",
                lambda resp: self._read_multipart(resp, origin),
                query=query,
                time_limit=self.time_limit_s,
            )
        except RequestFailed as exc:
            unrecognised = exc.errcode == "M_UNRECOGNIZED" or (
                exc.errcode is None and exc.status in (404, 405)
            )
            if not (exc.status in (400, 404, 405) and unrecognised):
                raise
        log.debug("media %s/%s: no federation media endpoint, trying legacy", origin, media_id)
        return await self.client.request_stream(
            origin,
            f"/_matrix/media/v3/{kind}/{quote_segment(origin)}/{quote_segment(media_id)}",
            lambda resp: self._read_plain(resp, origin),
            query={**(params or {}), "allow_remote": "false", "timeout_ms": str(REMOTE_TIMEOUT_MS)},
            signed=False,
            time_limit=self.time_limit_s,
        )

    def _check_length(self, length: int | None, overhead: int = 0) -> None:
        """Refuse an answer whose announced length is already over the limit."""
        if length is not None and length > self.max_size + overhead:
            raise ContentTooLarge(f"announced {length} bytes")

    async def _read_multipart(self, resp: aiohttp.ClientResponse, origin: str) -> Fetched:
        if resp.status != 200:
            raise await _failure(resp, origin)
        if resp.content_type != "multipart/mixed":
            raise Unreachable(origin, f"media answer is {resp.content_type}, not multipart/mixed")
        self._check_length(resp.content_length, overhead=2 * MAX_METADATA_BYTES)
        try:
            reader = aiohttp.MultipartReader(resp.headers, resp.content)
            metadata = await reader.next()
            if not isinstance(metadata, aiohttp.BodyPartReader):
                raise NotMultipart("no metadata part")
            await self._read_small(metadata)
            content = await reader.next()
            if not isinstance(content, aiohttp.BodyPartReader):
                raise NotMultipart("no content part")
            location = content.headers.get("Location")
            if location is not None:
                return await self.client.fetch_url(
                    origin, location, lambda found: self._read_plain(found, origin)
                )
            writer = self.files.writer(self.max_size)
            try:
                while chunk := await content.read_chunk(CHUNK):
                    writer.write(chunk)
                sha256, size = await writer.commit()
            finally:
                writer.discard()
        except (NotMultipart, ValueError, AssertionError, aiohttp.ClientPayloadError) as exc:
            raise Unreachable(origin, f"malformed multipart media answer: {exc}") from None
        return Fetched(
            sha256,
            size,
            clean_content_type(content.headers.get("Content-Type")),
            filename_from_disposition(content.headers.get("Content-Disposition")),
        )

    async def _read_small(self, part: aiohttp.BodyPartReader) -> None:
        """Read (and drop) the JSON metadata part, which must stay small."""
        size = 0
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > MAX_METADATA_BYTES:
                raise NotMultipart("metadata part is too large")

    async def _read_plain(self, resp: aiohttp.ClientResponse, origin: str) -> Fetched:
        if resp.status != 200:
            raise await _failure(resp, origin)
        self._check_length(resp.content_length)
        writer: FileWriter = self.files.writer(self.max_size)
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                writer.write(chunk)
            sha256, size = await writer.commit()
        except aiohttp.ClientPayloadError as exc:
            raise Unreachable(origin, f"truncated media answer: {exc}") from None
        finally:
            writer.discard()
        return Fetched(
            sha256,
            size,
            clean_content_type(resp.headers.get("Content-Type")),
            filename_from_disposition(resp.headers.get("Content-Disposition")),
        )
