"""Media retention: when media was last served, and which media has expired.

The last access is written at most once per `ACCESS_GRANULARITY_MS` per item (the
caller compares the row it already read), so serving media costs no extra write in
the common case. Expired media is deleted by storage/admin/media.py's `delete`,
which also removes the thumbnails and reports the files no row names any more."""

from __future__ import annotations

from psycopg import AsyncConnection

from homeserver.storage.media.media import unreferenced

# Access times are this coarse: retention counts in days, not minutes.
ACCESS_GRANULARITY_MS = 3600 * 1000
# The two-key advisory lock that lets one process at a time apply retention.
_RETENTION_LOCK = (0x4D656452, 0)  # "MedR"
BATCH = 500


async def touch(conn: AsyncConnection, origin: str, media_id: str, now_ms: int) -> None:
    await conn.execute(
        "UPDATE media SET last_access_ts = %s WHERE origin = %s AND media_id = %s",
        (now_ms, origin, media_id),
    )


async def try_lock(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _RETENTION_LOCK)
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", _RETENTION_LOCK)


async def expired(
    conn: AsyncConnection, local_origin: str, *, local: bool, before_ts: int
) -> list[tuple[str, str]]:
    """Up to BATCH (origin, media id) of local (or cached remote) media not served since
    `before_ts`, as Synapse chooses them: never protected or quarantined media, nor a
    local user's avatar."""
    cur = await conn.execute(
        "SELECT origin, media_id FROM media m WHERE (m.origin = %s) = %s"
        " AND m.uploaded_ts IS NOT NULL"
        " AND COALESCE(m.last_access_ts, m.uploaded_ts) < %s"
        " AND NOT m.safe_from_quarantine AND m.quarantined_by IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM profiles p"
        "   WHERE p.avatar_url = 'mxc://' || m.origin || '/' || m.media_id)"
        " LIMIT %s",
        (local_origin, local, before_ts, BATCH),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def delete_remote_thumbnails(
    conn: AsyncConnection, local_origin: str, before_ts: int
) -> list[str]:
    """Delete thumbnails of remote media made by its origin before `before_ts` and kept
    without the media itself (no row says when they were last served); the content
    hashes no row names any more."""
    cur = await conn.execute(
        "DELETE FROM media_thumbnails t WHERE t.origin <> %s AND t.created_ts < %s"
        " AND NOT EXISTS (SELECT 1 FROM media m"
        "   WHERE m.origin = t.origin AND m.media_id = t.media_id)"
        " RETURNING t.sha256",
        (local_origin, before_ts),
    )
    hashes = list({row[0] for row in await cur.fetchall()})
    if not hashes:
        return []
    return await unreferenced(conn, hashes)
