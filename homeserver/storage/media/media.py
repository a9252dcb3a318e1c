"""Media metadata: which mxc:// URIs exist, who made them, and which bytes they name.

The bytes themselves are files named by their SHA-256 (storage/media/files.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class MediaRow:
    origin: str
    media_id: str
    uploader: str | None
    content_type: str | None
    filename: str | None
    size: int | None
    sha256: str | None  # None while an async upload is pending
    created_ts: int
    expires_ts: int | None
    quarantined_by: str | None = None
    # Stored while authenticated media was on: not served on the legacy paths.
    authenticated: bool = False
    last_access_ts: int | None = None  # None: not served since it was stored

    @property
    def uploaded(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class ThumbnailRow:
    width: int
    height: int
    method: str
    animated: bool
    content_type: str
    size: int
    sha256: str


_MEDIA_COLUMNS = (
    "origin, media_id, uploader, content_type, filename, size, sha256, created_ts, expires_ts,"
    " quarantined_by, authenticated, last_access_ts"
)


async def insert_media(
    conn: AsyncConnection,
    origin: str,
    media_id: str,
    *,
    uploader: str | None,
    content_type: str | None,
    filename: str | None,
    size: int,
    sha256: str,
    now_ms: int,
    authenticated: bool = False,
) -> bool:
    """Record uploaded (or fetched) content; False when the id already exists, which for
    remote media means another request cached it first."""
    cur = await conn.execute(
        "INSERT INTO media (origin, media_id, uploader, content_type, filename, size, sha256,"
        " created_ts, uploaded_ts, authenticated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (origin, media_id) DO NOTHING",
        (
            origin,
            media_id,
            uploader,
            content_type,
            filename,
            size,
            sha256,
            now_ms,
            now_ms,
            authenticated,
        ),
    )
    return cur.rowcount == 1


async def create_pending(
    conn: AsyncConnection,
    origin: str,
    media_id: str,
    uploader: str,
    now_ms: int,
    expires_ts: int,
    max_pending: int,
) -> bool:
    """Reserve a media id for a later upload, unless the user already has `max_pending`
    unexpired reservations (False then). The count and the insert are one statement under
    a per-user lock, so parallel requests cannot overshoot the limit."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('media_pending:' || %s, 0))",
            (uploader,),
        )
        cur = await conn.execute(
            "INSERT INTO media (origin, media_id, uploader, created_ts, expires_ts)"
            " SELECT %s, %s, %s, %s, %s WHERE (SELECT count(*) FROM media"
            "   WHERE uploader = %s AND uploaded_ts IS NULL AND expires_ts > %s) < %s",
            (origin, media_id, uploader, now_ms, expires_ts, uploader, now_ms, max_pending),
        )
        return cur.rowcount == 1


async def complete_pending(
    conn: AsyncConnection,
    origin: str,
    media_id: str,
    *,
    content_type: str | None,
    filename: str | None,
    size: int,
    sha256: str,
    now_ms: int,
    authenticated: bool = False,
) -> bool:
    """Attach content to a reserved id; False when it already has content (or expired),
    so that of two racing uploads exactly one wins."""
    cur = await conn.execute(
        "UPDATE media SET content_type = %s, filename = %s, size = %s, sha256 = %s,"
        " uploaded_ts = %s, expires_ts = NULL, authenticated = %s"
        " WHERE origin = %s AND media_id = %s AND uploaded_ts IS NULL AND expires_ts > %s",
        (content_type, filename, size, sha256, now_ms, authenticated, origin, media_id, now_ms),
    )
    return cur.rowcount == 1


async def uploaded_since(conn: AsyncConnection, uploader: str, since_ms: int) -> int:
    """Bytes a user has uploaded since `since_ms` (for `media_upload_limits`)."""
    cur = await conn.execute(
        "SELECT coalesce(sum(size), 0) FROM media"
        " WHERE uploader = %s AND uploaded_ts IS NOT NULL AND uploaded_ts >= %s",
        (uploader, since_ms),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def get_media(conn: AsyncConnection, origin: str, media_id: str) -> MediaRow | None:
    cur = await conn.execute(
        f"SELECT {_MEDIA_COLUMNS} FROM media WHERE origin = %s AND media_id = %s",
        (origin, media_id),
    )
    row = await cur.fetchone()
    return MediaRow(*row) if row else None


async def get_thumbnail(
    conn: AsyncConnection,
    origin: str,
    media_id: str,
    width: int,
    height: int,
    method: str,
    animated: bool,
) -> ThumbnailRow | None:
    cur = await conn.execute(
        "SELECT width, height, method, animated, content_type, size, sha256"
        " FROM media_thumbnails WHERE origin = %s AND media_id = %s AND width = %s"
        " AND height = %s AND method = %s AND animated = %s",
        (origin, media_id, width, height, method, animated),
    )
    row = await cur.fetchone()
    return ThumbnailRow(*row) if row else None


async def insert_thumbnail(
    conn: AsyncConnection, origin: str, media_id: str, thumbnail: ThumbnailRow, now_ms: int
) -> None:
    """Remember a generated thumbnail; a parallel request that generated the same one
    first wins, and both name identical bytes."""
    await conn.execute(
        "INSERT INTO media_thumbnails (origin, media_id, width, height, method, animated,"
        " content_type, size, sha256, created_ts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (
            origin,
            media_id,
            thumbnail.width,
            thumbnail.height,
            thumbnail.method,
            thumbnail.animated,
            thumbnail.content_type,
            thumbnail.size,
            thumbnail.sha256,
            now_ms,
        ),
    )


async def unreferenced(conn: AsyncConnection, hashes: list[str]) -> list[str]:
    """Which of these content hashes no media or thumbnail row names any more: the files
    that may be deleted."""
    cur = await conn.execute(
        "SELECT h FROM unnest(%s::text[]) AS h WHERE NOT EXISTS"
        " (SELECT 1 FROM media WHERE sha256 = h) AND NOT EXISTS"
        " (SELECT 1 FROM media_thumbnails WHERE sha256 = h)",
        (hashes,),
    )
    return [row[0] for row in await cur.fetchall()]


async def try_lock_fetch(conn: AsyncConnection, key: str) -> bool:
    """Take the session lock on fetching `key` from another server, if no process holds
    it (the connection is one the caller keeps: a dead process lets go with it)."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended('remote_media_fetch:' || %s, 0))", (key,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock_fetch(conn: AsyncConnection, key: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(hashtextextended('remote_media_fetch:' || %s, 0))", (key,)
    )
