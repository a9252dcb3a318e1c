"""The media repository: uploads (direct and asynchronous), downloads of local and
remote media, and the rules for serving them safely.

Bytes stream from the request to a content-addressed file (storage/media/files.py)
while they are counted, so an upload over the limit is refused without ever being
held in memory; metadata goes to the `media` table. Remote media is fetched over
federation by services/media/remote.py, thumbnails are made by
services/media/thumbnails.py.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from federation.identifiers import is_valid_server_name
from homeserver.config.media import UploadLimit
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.core.replica_reads import read_recent
from homeserver.services.media.retention import MediaRetention
from homeserver.storage.core.pool import Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.media import media as store
from homeserver.storage.media.files import ContentTooLarge, MediaFiles

# The spec's list of types safe to render inline in a browser ("Serving inline content");
# everything else is served as an attachment so that a browser opening a media URL never
# runs it as a page of the homeserver's origin.
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)
# Sent with every media response, as the spec recommends: even content a browser does
# render can run no script and load nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
        " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    ),
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

MEDIA_ID_ALPHABET = string.ascii_letters + string.digits
MEDIA_ID_LENGTH = 24
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
# type/subtype with optional parameters, printable ASCII only: anything else is stored
# as application/octet-stream rather than echoed back in a header.
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,128}(\s*;[\x20-\x7e]{0,200})?"
)
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$&+-.^_`|~")
MAX_FILENAME_LENGTH = 255

PENDING_LIFETIME_MS = 24 * 60 * 60 * 1000
MAX_PENDING_UPLOADS = 50
# Synapse's page for users over an upload limit (the error's default `info_uri`).
UPLOAD_LIMIT_PAGE = "/_synapse/client/media_upload_limit_exceeded"
DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
PENDING_POLL_S = 0.5


def too_large(message: str, status: int = 413) -> ServiceError:
    return ServiceError(status, "M_TOO_LARGE", message)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What a download serves: the bytes' path and how to label them."""

    path: Path
    sha256: str
    size: int
    content_type: str
    filename: str | None


def check_media_ref(server_name: str, media_id: str) -> None:
    """A malformed server name or media id names no media: refuse it before it reaches
    the database or, worse, becomes a federation destination."""
    if not is_valid_server_name(server_name):
        raise invalid_param("serverName is not a valid server name")
    if not _MEDIA_ID.fullmatch(media_id):
        raise invalid_param("mediaId may only contain A-Z, a-z, 0-9, '_' and '-'")


def clean_content_type(value: str | None) -> str:
    """The declared type when it is well-formed, else application/octet-stream."""
    if value is None:
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    return value if _CONTENT_TYPE.fullmatch(value) else DEFAULT_CONTENT_TYPE


def check_filename(filename: str | None) -> str | None:
    """Filenames end up in a response header: bounded, and no control characters."""
    if filename is None or filename == "":
        return None
    if len(filename) > MAX_FILENAME_LENGTH:
        raise invalid_param(f"filename is longer than {MAX_FILENAME_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise invalid_param("filename contains control characters")
    return filename


def is_inline(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in INLINE_CONTENT_TYPES


def content_disposition(disposition: str, filename: str | None) -> str:
    """`inline` or `attachment`, with the filename as RFC 6266 wants it: a plain token
    or quoted string when it is simple ASCII, else the RFC 5987 `filename*` form (UTF-8,
    percent-encoded), which cannot break out of the header whatever the name holds."""
    if not filename:
        return disposition
    if all(c in _TOKEN_CHARS for c in filename):
        return f"{disposition}; filename={filename}"
    if (
        all(0x20 <= ord(c) < 0x7F for c in filename)
        and '"' not in filename
        and "\\" not in filename
    ):
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename*=utf-8''{quote(filename, safe='')}"


def download_headers(content_type: str, filename: str | None) -> dict[str, str]:
    """Content-Type, Content-Disposition and the security headers of a download."""
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(
            "inline" if is_inline(content_type) else "attachment", filename
        ),
        **SECURITY_HEADERS,
    }


def parse_timeout_ms(raw: str | None) -> int:
    """`timeout_ms`, defaulted and capped as the spec asks."""
    if raw is None:
        return DEFAULT_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param("timeout_ms must be an integer") from None
    return max(0, min(value, MAX_TIMEOUT_MS))


class RemoteSource(Protocol):
    """Where remote media comes from (services/media/remote.py)."""

    async def fetch(self, origin: str, media_id: str) -> store.MediaRow:
        """The cached row of remote media, fetched from its origin first if need be."""


def new_media_id() -> str:
    return "".join(secrets.choice(MEDIA_ID_ALPHABET) for _ in range(MEDIA_ID_LENGTH))


class MediaRepository:
    """Local uploads and downloads; remote media through `remote`."""

    def __init__(
        self,
        db: Database,
        replicas: Replicas,
        files: MediaFiles,
        remote: RemoteSource,
        server_name: str,
        max_upload_size: int,
        *,
        authenticated_media: bool = True,
        upload_limits: tuple[UploadLimit, ...] = (),
        retention: MediaRetention | None = None,
        limit_info_uri: str = "",
    ) -> None:
        self.db = db
        self.replicas = replicas
        self.files = files
        self.remote = remote
        self.server_name = server_name
        self.max_upload_size = max_upload_size
        # Uploads made while this is on are marked and kept off the legacy paths.
        self.authenticated_media = authenticated_media
        self.upload_limits = upload_limits
        # The page a refused upload points to when its limit names none.
        self.limit_info_uri = limit_info_uri
        # Told of each access, for media_retention's last-access times.
        self.retention = retention
        # Woken when an async upload completes in this process; others are polled for.
        self._uploaded: dict[tuple[str, str], asyncio.Event] = {}

    def config(self) -> dict[str, int]:
        return {"m.upload.size": self.max_upload_size}

    def _mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    async def check_upload_limits(self, user_id: str, size: int) -> None:
        """Refuse an upload of `size` bytes that would take the user past one of
        `media_upload_limits` (Synapse's 403 M_USER_LIMIT_EXCEEDED, with `info_uri`)."""
        if not self.upload_limits:
            return
        now = now_ms()
        async with self.db.pool.connection() as conn:
            for limit in self.upload_limits:
                used = await store.uploaded_since(conn, user_id, now - limit.period_ms)
                if used + size > limit.max_bytes:
                    extra: dict[str, object] = {"info_uri": limit.info_uri or self.limit_info_uri}
                    if limit.can_upgrade:
                        extra["can_upgrade"] = True
                    raise ServiceError(
                        403, "M_USER_LIMIT_EXCEEDED", "Media upload limit exceeded", **extra
                    )

    async def _receive(
        self, body: AsyncIterator[bytes], declared_length: int | None
    ) -> tuple[str, int]:
        """Stream a request body into the store; (sha256, size), or 413 M_TOO_LARGE as
        soon as the declared length or the bytes received pass the limit."""
        if declared_length is not None and declared_length > self.max_upload_size:
            raise too_large(f"uploads are limited to {self.max_upload_size} bytes")
        writer = self.files.writer(self.max_upload_size)
        try:
            async for chunk in body:
                writer.write(chunk)
            return await writer.commit()
        except ContentTooLarge:
            raise too_large(f"uploads are limited to {self.max_upload_size} bytes") from None
        finally:
            writer.discard()

    async def upload(
        self,
        user_id: str,
        body: AsyncIterator[bytes],
        declared_length: int | None,
        content_type: str | None,
        filename: str | None,
    ) -> str:
        """Store an upload under a fresh media id; its mxc:// URI."""
        filename = check_filename(filename)
        await self.check_upload_limits(user_id, declared_length or 0)
        sha256, size = await self._receive(body, declared_length)
        await self.check_upload_limits(user_id, size)
        return await self._record(user_id, sha256, size, content_type, filename)

    async def store_fetched(
        self, sha256: str, size: int, content_type: str, filename: str | None
    ) -> str:
        """Record content the server fetched itself (a link preview's image, already in
        the file store) as local media with no uploader; its mxc:// URI."""
        return await self._record(None, sha256, size, content_type, filename)

    async def _record(
        self,
        uploader: str | None,
        sha256: str,
        size: int,
        content_type: str | None,
        filename: str | None,
    ) -> str:
        """Stored content as local media under a fresh id; its mxc:// URI."""
        media_id = new_media_id()
        async with self.db.pool.connection() as conn:
            await store.insert_media(
                conn,
                self.server_name,
                media_id,
                uploader=uploader,
                content_type=clean_content_type(content_type),
                filename=filename,
                size=size,
                sha256=sha256,
                now_ms=now_ms(),
                authenticated=self.authenticated_media,
            )
        return self._mxc(media_id)

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media id for a later upload; (mxc URI, expiry timestamp)."""
        media_id = new_media_id()
        now = now_ms()
        expires = now + PENDING_LIFETIME_MS
        async with self.db.pool.connection() as conn:
            created = await store.create_pending(
                conn, self.server_name, media_id, user_id, now, expires, MAX_PENDING_UPLOADS
            )
        if not created:
            raise ServiceError(
                429,
                "M_LIMIT_EXCEEDED",
                f"at most {MAX_PENDING_UPLOADS} uploads may be pending at once",
                retry_after_ms=60_000,
            )
        return self._mxc(media_id), expires

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        body: AsyncIterator[bytes],
        declared_length: int | None,
        content_type: str | None,
        filename: str | None,
    ) -> None:
        """Give content to an id reserved with `create`, by the user who reserved it."""
        check_media_ref(server_name, media_id)
        filename = check_filename(filename)
        if server_name != self.server_name:
            raise not_found("Unknown media ID")
        row = await self._row(server_name, media_id)
        now = now_ms()
        if row is None or (not row.uploaded and (row.expires_ts or 0) <= now):
            raise not_found("Unknown media ID")
        if row.uploader != user_id:
            raise ServiceError(403, "M_FORBIDDEN", "This media ID was created by another user")
        if row.uploaded:
            raise ServiceError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        await self.check_upload_limits(user_id, declared_length or 0)
        sha256, size = await self._receive(body, declared_length)
        await self.check_upload_limits(user_id, size)
        async with self.db.pool.connection() as conn:
            completed = await store.complete_pending(
                conn,
                server_name,
                media_id,
                content_type=clean_content_type(content_type),
                filename=filename,
                size=size,
                sha256=sha256,
                now_ms=now_ms(),
                authenticated=self.authenticated_media,
            )
        if not completed:
            raise ServiceError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        event = self._uploaded.pop((server_name, media_id), None)
        if event is not None:
            event.set()

    async def _row(self, origin: str, media_id: str) -> store.MediaRow | None:
        """Metadata, on a recent replica when it has the media uploaded: a row there that
        is missing or still pending may only be behind, and the primary decides."""
        return await read_recent(
            self.db,
            self.replicas,
            lambda conn: store.get_media(conn, origin, media_id),
            settled=lambda row: row is not None and row.uploaded,
        )

    async def _wait_uploaded(self, row: store.MediaRow, timeout_ms: int) -> store.MediaRow:
        """Wait for a pending async upload to arrive, up to the client's timeout; 504
        M_NOT_YET_UPLOADED after it. Uploads finished in this process wake the waiter at
        once; those finished by another worker are noticed by polling."""
        key = (row.origin, row.media_id)
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            return await self._poll_uploaded(row, key, deadline)
        finally:
            # Another waiter still holding the event falls back to polling.
            self._uploaded.pop(key, None)

    async def _poll_uploaded(
        self, row: store.MediaRow, key: tuple[str, str], deadline: float
    ) -> store.MediaRow:
        while True:
            if not row.uploaded and (row.expires_ts or 0) <= now_ms():
                raise not_found("Unknown media ID")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
            event = self._uploaded.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), min(remaining, PENDING_POLL_S))
            except TimeoutError:
                pass
            fresh = await self._row(row.origin, row.media_id)
            if fresh is None:
                raise not_found("Unknown media ID")
            if fresh.uploaded:
                return fresh
            row = fresh

    async def media(
        self,
        server_name: str,
        media_id: str,
        *,
        timeout_ms: int,
        allow_remote: bool,
        legacy: bool = False,
    ) -> store.MediaRow:
        """The uploaded media row for an mxc:// URI: local, cached, or fetched from its
        origin (when allowed); waits for a pending async upload up to `timeout_ms`.
        `legacy` requests (the unauthenticated paths) do not see authenticated media."""
        check_media_ref(server_name, media_id)
        row = await self._row(server_name, media_id)
        if row is None:
            if server_name == self.server_name or not allow_remote:
                raise not_found("Unknown media ID")
            row = await self.remote.fetch(server_name, media_id)
        if row.quarantined_by is not None:
            raise not_found("This media has been quarantined")
        if legacy and self.authenticated_media and row.authenticated:
            raise not_found("This media is only served on the authenticated endpoints")
        if not row.uploaded:
            row = await self._wait_uploaded(row, timeout_ms)
        if row.sha256 is None or row.size is None or not self.files.exists(row.sha256):
            raise not_found("The media's content is missing")
        if self.retention is not None:
            await self.retention.accessed(row)
        return row

    async def download(
        self,
        server_name: str,
        media_id: str,
        *,
        timeout_ms: int,
        allow_remote: bool,
        legacy: bool = False,
    ) -> StoredFile:
        row = await self.media(
            server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote, legacy=legacy
        )
        assert row.sha256 is not None and row.size is not None
        return StoredFile(
            path=self.files.path_of(row.sha256),
            sha256=row.sha256,
            size=row.size,
            content_type=row.content_type or DEFAULT_CONTENT_TYPE,
            filename=row.filename,
        )
