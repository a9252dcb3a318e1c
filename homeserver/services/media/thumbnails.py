"""Thumbnails of images, made on demand with Pillow and kept (file and table row) so
that each is made once. Another server's media we do not hold is thumbnailed by its
origin (the federation thumbnail endpoint): the full file, maybe large, is fetched and
thumbnailed here only when the origin cannot make the thumbnail.

Requested sizes are rounded up to a fixed ladder: the spec lets a thumbnail be larger
than asked for, and without the ladder anyone could fill the disk by asking for every
width and height of one image. The decoder only sees formats we chose (JPEG, PNG, GIF,
WebP), images over a pixel budget are refused before they are decoded, and any failure
of a hostile or corrupt file becomes a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, invalid_param
from homeserver.services.core.replica_reads import read_recent
from homeserver.services.core.single_flight import SingleFlight
from homeserver.services.media.remote import Fetched, RemoteMedia
from homeserver.services.media.repository import (
    MediaRepository,
    StoredFile,
    check_media_ref,
    too_large,
)
from homeserver.services.remote.client import FederationError, RequestFailed
from homeserver.storage.core.pool import Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.media import media as store
from homeserver.storage.media.files import ContentTooLarge, MediaFiles

if TYPE_CHECKING:
    from PIL import Image

SIZE_LADDER = (32, 48, 64, 96, 128, 160, 240, 320, 480, 640, 800)
METHODS = ("crop", "scale")
THUMBNAILABLE_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/apng", "image/gif", "image/webp"}
)
DECODER_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
MAX_SOURCE_PIXELS = 40_000_000
MAX_ANIMATED_PIXELS = 200_000_000  # frames x width x height decoded for one animation
MAX_FRAMES = 200
MAX_SOURCE_BYTES = 100 * 1024 * 1024
JPEG_QUALITY = 85
# Decoding is CPU- and memory-heavy: a few at a time per process.
MAX_CONCURRENT_RENDERS = 2


class CannotThumbnail(Exception):
    """The content is not an image we can decode."""


class SourceTooLarge(Exception):
    """The image has more pixels than we are willing to decode."""


@dataclass(frozen=True, slots=True)
class ThumbnailRequest:
    width: int
    height: int
    method: str
    animated: bool


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    content_type: str


def _snap(value: int) -> int:
    return next((size for size in SIZE_LADDER if size >= value), SIZE_LADDER[-1])


def parse_request(
    width: str | None, height: str | None, method: str | None, animated: str | None
) -> ThumbnailRequest:
    """The query parameters, checked, with the size rounded up to the ladder."""
    dims: list[int] = []
    for name, raw in (("width", width), ("height", height)):
        if raw is None:
            raise ServiceError(400, "M_MISSING_PARAM", f"{name} is required")
        try:
            value = int(raw)
        except ValueError:
            raise invalid_param(f"{name} must be an integer") from None
        if value < 1:
            raise invalid_param(f"{name} must be positive")
        dims.append(_snap(value))
    chosen = method or "scale"
    if chosen not in METHODS:
        raise invalid_param("method must be crop or scale")
    if animated not in (None, "true", "false"):
        raise invalid_param("animated must be true or false")
    return ThumbnailRequest(dims[0], dims[1], chosen, animated == "true")


def _lanczos() -> Image.Resampling:
    from PIL import Image

    return Image.Resampling.LANCZOS


def _crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred box of the target's aspect ratio, shrunk to the target (never
    enlarged: a small image gives a small thumbnail of the right shape)."""
    src_w, src_h = image.size
    if src_w * height > src_h * width:
        box_w, box_h = max(1, round(src_h * width / height)), src_h
    else:
        box_w, box_h = src_w, max(1, round(src_w * height / width))
    left, top = (src_w - box_w) // 2, (src_h - box_h) // 2
    box = (left, top, left + box_w, top + box_h)
    if box_w <= width:
        return image.crop(box)
    return image.resize((width, height), _lanczos(), box=box)


def _scale(image: Image.Image, width: int, height: int) -> Image.Image:
    """Fit inside the target, keeping the aspect ratio, never enlarging."""
    src_w, src_h = image.size
    ratio = min(width / src_w, height / src_h)
    if ratio >= 1:
        return image.copy()
    size = (max(1, math.floor(src_w * ratio)), max(1, math.floor(src_h * ratio)))
    return image.resize(size, _lanczos())


def _resize(image: Image.Image, request: ThumbnailRequest) -> Image.Image:
    if request.method == "crop":
        return _crop(image, request.width, request.height)
    return _scale(image, request.width, request.height)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _normalise(image: Image.Image) -> Image.Image:
    """A mode that resizes smoothly and encodes as PNG or JPEG."""
    if _has_alpha(image):
        return image.convert("RGBA")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")


def _render_static(image: Image.Image, request: ThumbnailRequest, source_format: str) -> Rendered:
    from PIL import ImageOps

    image = _normalise(ImageOps.exif_transpose(image))
    thumb = _resize(image, request)
    out = io.BytesIO()
    if _has_alpha(thumb) or source_format in ("PNG", "GIF"):
        thumb.save(out, "PNG", optimize=False)
        return Rendered(out.getvalue(), "image/png")
    thumb.save(out, "JPEG", quality=JPEG_QUALITY)
    return Rendered(out.getvalue(), "image/jpeg")


def _render_animated(image: Image.Image, request: ThumbnailRequest) -> Rendered:
    """An animated WebP, the type the spec prefers for animation."""
    from PIL import ImageSequence

    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(image):
        if len(frames) >= MAX_FRAMES:
            break
        frames.append(_resize(frame.convert("RGBA"), request))
        durations.append(int(frame.info.get("duration", 100)) or 100)
    out = io.BytesIO()
    frames[0].save(
        out,
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=0,
        quality=80,
    )
    return Rendered(out.getvalue(), "image/webp")


def render(path: Path, request: ThumbnailRequest) -> Rendered:
    """Decode and shrink one image (blocking: run it in a thread).

    The input is whatever a user or another server sent: besides Pillow's documented
    errors, a crafted file can trip assertions and arithmetic errors deep in a decoder.
    Every failure is CannotThumbnail, except a pixel count over the budget.
    Pillow is imported here, by the first thumbnail: a server that makes none never
    loads it (about 2 MiB).
    """
    from PIL import Image

    try:
        with Image.open(path, formats=DECODER_FORMATS) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise CannotThumbnail("empty image")
            if width * height > MAX_SOURCE_PIXELS:
                raise SourceTooLarge(f"{width}x{height} pixels")
            frames = int(getattr(image, "n_frames", 1))
            if request.animated and frames > 1:
                if width * height * min(frames, MAX_FRAMES) > MAX_ANIMATED_PIXELS:
                    raise SourceTooLarge(f"{frames} frames of {width}x{height}")
                return _render_animated(image, request)
            if image.format == "JPEG":
                # Let the decoder skip detail the thumbnail will not show.
                image.draft("RGB", (request.width * 2, request.height * 2))
            return _render_static(image, request, image.format or "")
    except (SourceTooLarge, CannotThumbnail):
        raise
    except Image.DecompressionBombError as exc:
        raise SourceTooLarge(str(exc)) from None
    except Exception as exc:
        raise CannotThumbnail(f"{type(exc).__name__}: {exc}") from None


def _cannot() -> ServiceError:
    return ServiceError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")


class ThumbnailService:
    """Thumbnails of local and (fetched) remote media."""

    def __init__(
        self,
        db: Database,
        replicas: Replicas,
        files: MediaFiles,
        media: MediaRepository,
        remote: RemoteMedia,
        server_name: str,
    ) -> None:
        self.db = db
        self.replicas = replicas
        self.files = files
        self.media = media
        self.remote = remote
        self.server_name = server_name
        self._renders = asyncio.Semaphore(MAX_CONCURRENT_RENDERS)
        self._work: SingleFlight[tuple[str, str, ThumbnailRequest], StoredFile] = SingleFlight()
        self._fetches: SingleFlight[tuple[str, str, ThumbnailRequest], StoredFile | None] = (
            SingleFlight()
        )

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        request: ThumbnailRequest,
        *,
        timeout_ms: int,
        allow_remote: bool,
        legacy: bool = False,
    ) -> StoredFile:
        """A thumbnail of the media; `legacy` (unauthenticated) requests do not see media
        marked authenticated."""
        if server_name != self.server_name and allow_remote:
            from_origin = await self._from_origin(server_name, media_id, request)
            if from_origin is not None:
                return from_origin
        row = await self.media.media(
            server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote, legacy=legacy
        )
        content_type = (row.content_type or "").split(";", 1)[0].strip().lower()
        if content_type not in THUMBNAILABLE_TYPES:
            raise _cannot()
        assert row.size is not None and row.sha256 is not None
        if row.size > MAX_SOURCE_BYTES:
            status = 413 if server_name == self.server_name else 502
            raise too_large("Content is too large to thumbnail", status)
        cached = await self._cached(row, request)
        if cached is not None:
            return cached
        return await self._work.run(
            (row.origin, row.media_id, request), lambda: self._generate(row, request)
        )

    async def _from_origin(
        self, origin: str, media_id: str, request: ThumbnailRequest
    ) -> StoredFile | None:
        """Remote media we do not hold, thumbnailed by its origin (kept like ours); None
        when we hold the file (thumbnailed here) or the origin made no usable thumbnail."""
        check_media_ref(origin, media_id)
        held = await read_recent(
            self.db,
            self.replicas,
            lambda conn: store.get_media(conn, origin, media_id),
            settled=lambda row: row is not None,
        )
        if held is not None:
            return None
        cached = await self._cached_by_ref(origin, media_id, request)
        if cached is not None:
            return cached
        size = f"{request.width}x{request.height} {request.method} {request.animated}"
        key = f"thumbnail {origin}/{media_id} {size}"
        return await self._fetches.run(
            (origin, media_id, request),
            lambda: self.remote.once_in_cluster(
                key,
                lambda: self._cached_by_ref(origin, media_id, request),
                lambda: self._fetch(origin, media_id, request),
            ),
        )

    async def _fetch(
        self, origin: str, media_id: str, request: ThumbnailRequest
    ) -> StoredFile | None:
        params = {
            "width": str(request.width),
            "height": str(request.height),
            "method": request.method,
            "animated": "true" if request.animated else "false",
        }
        try:
            fetched: Fetched = await self.remote.fetch_thumbnail(origin, media_id, params)
        except RequestFailed as exc:
            if exc.status == 404 and exc.errcode == "M_NOT_FOUND":
                raise ServiceError(404, "M_NOT_FOUND", "Unknown media ID") from None
            return None
        except (FederationError, ContentTooLarge):
            return None
        if fetched.content_type.split(";", 1)[0].strip().lower() not in THUMBNAILABLE_TYPES:
            return None
        async with self.db.pool.connection() as conn:
            await store.insert_thumbnail(
                conn,
                origin,
                media_id,
                store.ThumbnailRow(
                    width=request.width,
                    height=request.height,
                    method=request.method,
                    animated=request.animated,
                    content_type=fetched.content_type,
                    size=fetched.size,
                    sha256=fetched.sha256,
                ),
                now_ms(),
            )
        return self._stored(fetched.sha256, fetched.size, fetched.content_type)

    async def _cached(self, row: store.MediaRow, request: ThumbnailRequest) -> StoredFile | None:
        return await self._cached_by_ref(row.origin, row.media_id, request)

    async def _cached_by_ref(
        self, origin: str, media_id: str, request: ThumbnailRequest
    ) -> StoredFile | None:
        thumb = await read_recent(
            self.db,
            self.replicas,
            lambda conn: store.get_thumbnail(
                conn,
                origin,
                media_id,
                request.width,
                request.height,
                request.method,
                request.animated,
            ),
            settled=lambda row: row is not None,
        )
        if thumb is None or not self.files.exists(thumb.sha256):
            return None
        return self._stored(thumb.sha256, thumb.size, thumb.content_type)

    def _stored(self, sha256: str, size: int, content_type: str) -> StoredFile:
        extension = content_type.rpartition("/")[2]
        return StoredFile(
            path=self.files.path_of(sha256),
            sha256=sha256,
            size=size,
            content_type=content_type,
            filename=f"thumbnail.{extension}",
        )

    async def _generate(self, row: store.MediaRow, request: ThumbnailRequest) -> StoredFile:
        assert row.sha256 is not None
        source = self.files.path_of(row.sha256)
        async with self._renders:
            try:
                rendered = await asyncio.to_thread(render, source, request)
            except CannotThumbnail:
                raise _cannot() from None
            except SourceTooLarge:
                status = 413 if row.origin == self.server_name else 502
                raise too_large("Content is too large to thumbnail", status) from None
        sha256, size = await self.files.write_bytes(rendered.data)
        async with self.db.pool.connection() as conn:
            await store.insert_thumbnail(
                conn,
                row.origin,
                row.media_id,
                store.ThumbnailRow(
                    width=request.width,
                    height=request.height,
                    method=request.method,
                    animated=request.animated,
                    content_type=rendered.content_type,
                    size=size,
                    sha256=sha256,
                ),
                now_ms(),
            )
        return self._stored(sha256, size, rendered.content_type)
