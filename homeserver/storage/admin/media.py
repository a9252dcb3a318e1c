"""Media as admins moderate it: listing a user's uploads, quarantine (by media, by the
rooms that mention it, by uploader), protection, and deletion, which reports the files
no row names any more so that the caller removes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection, sql

from homeserver.storage.media.media import unreferenced


@dataclass(frozen=True, slots=True)
class AdminMediaRow:
    origin: str
    media_id: str
    uploader: str | None
    content_type: str | None
    filename: str | None
    size: int | None
    created_ts: int
    quarantined_by: str | None
    safe_from_quarantine: bool
    sha256: str | None
    last_access_ts: int  # when last served, or stored if not since


# When media was last used, as Synapse counts it: served, or else stored (a NULL
# `last_access_ts` means not served since).
LAST_USED = "COALESCE(last_access_ts, created_ts)"
_COLUMNS = (
    "origin, media_id, uploader, content_type, filename, size, created_ts, quarantined_by,"
    f" safe_from_quarantine, sha256, {LAST_USED}"
)
# Synapse's order_by names for a user's media.
ORDER_COLUMNS = {
    "media_id": "media_id",
    "upload_name": "filename",
    "created_ts": "created_ts",
    "last_access_ts": LAST_USED,
    "media_length": "size",
    "media_type": "content_type",
    "quarantined_by": "quarantined_by",
    "safe_from_quarantine": "safe_from_quarantine",
}


async def get(conn: AsyncConnection, origin: str, media_id: str) -> AdminMediaRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM media WHERE origin = %s AND media_id = %s", (origin, media_id)
    )
    row = await cur.fetchone()
    return AdminMediaRow(*row) if row else None


async def of_user(
    conn: AsyncConnection,
    origin: str,
    user_id: str,
    *,
    order_by: str,
    ascending: bool,
    offset: int,
    limit: int,
) -> tuple[list[AdminMediaRow], int]:
    direction = sql.SQL("ASC" if ascending else "DESC")
    cur = await conn.execute(
        sql.SQL(
            f"SELECT {_COLUMNS}, count(*) OVER () FROM media WHERE origin = %s AND uploader = %s"
            " ORDER BY {} {} NULLS LAST, media_id ASC LIMIT %s OFFSET %s"
        ).format(sql.SQL(ORDER_COLUMNS[order_by]), direction),
        (origin, user_id, limit, offset),
    )
    rows = await cur.fetchall()
    total = int(rows[0][-1]) if rows else 0
    if not rows and offset:
        cur = await conn.execute(
            "SELECT count(*) FROM media WHERE origin = %s AND uploader = %s", (origin, user_id)
        )
        counted = await cur.fetchone()
        total = int(counted[0]) if counted else 0
    return [AdminMediaRow(*row[:-1]) for row in rows], total


async def set_quarantined(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]], by: str | None
) -> int:
    """Quarantine (by an admin) or release these media; protected media stays as it is
    when quarantining. How many rows changed."""
    if not keys:
        return 0
    cur = await conn.execute(
        "UPDATE media SET quarantined_by = %s"
        " WHERE (origin, media_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " AND (%s::text IS NULL OR NOT safe_from_quarantine)",
        (by, [k[0] for k in keys], [k[1] for k in keys], by),
    )
    return cur.rowcount


async def media_of_uploader(conn: AsyncConnection, origin: str, user_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT media_id FROM media WHERE origin = %s AND uploader = %s", (origin, user_id)
    )
    return [row[0] for row in await cur.fetchall()]


async def set_protected(conn: AsyncConnection, origin: str, media_id: str, safe: bool) -> bool:
    cur = await conn.execute(
        "UPDATE media SET safe_from_quarantine = %s WHERE origin = %s AND media_id = %s",
        (safe, origin, media_id),
    )
    return cur.rowcount == 1


async def room_media_urls(conn: AsyncConnection, room_id: str) -> list[str]:
    """The mxc:// URIs the room's events point at (content url, and thumbnail url)."""
    cur = await conn.execute(
        "SELECT DISTINCT u FROM events e,"
        " LATERAL (SELECT e.json::jsonb -> 'content' AS c) j,"
        " LATERAL unnest(ARRAY[c ->> 'url', c -> 'info' ->> 'thumbnail_url']) AS u"
        " WHERE e.room_id = %s AND e.contains_url AND e.json !~ '\\\\u(0000|[dD][89a-fA-F])'"
        " AND u LIKE 'mxc://%%'",
        (room_id,),
    )
    return [row[0] for row in await cur.fetchall()]


async def select_for_deletion(
    conn: AsyncConnection,
    origin: str,
    *,
    before_ts: int,
    size_gt: int,
    keep_profiles: bool,
    local: bool,
) -> list[str]:
    """Media ids of `origin` (or of every other origin: the remote cache, when not
    `local`) last used before `before_ts`, larger than `size_gt`, not protected."""
    cur = await conn.execute(
        f"SELECT media_id FROM media m WHERE (m.origin = %s) = %s AND {LAST_USED} < %s"
        " AND COALESCE(m.size, 0) > %s AND NOT m.safe_from_quarantine"
        " AND NOT (%s AND EXISTS (SELECT 1 FROM profiles p"
        " WHERE p.avatar_url = 'mxc://' || m.origin || '/' || m.media_id))",
        (origin, local, before_ts, size_gt, keep_profiles),
    )
    return [row[0] for row in await cur.fetchall()]


async def remote_before(
    conn: AsyncConnection, origin: str, before_ts: int
) -> list[tuple[str, str]]:
    """Cached media of other servers last used before `before_ts`."""
    cur = await conn.execute(
        f"SELECT origin, media_id FROM media WHERE origin <> %s AND {LAST_USED} < %s",
        (origin, before_ts),
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def delete(conn: AsyncConnection, keys: Sequence[tuple[str, str]]) -> list[str]:
    """Delete these media rows and their thumbnails; the content hashes no row names
    any more (their files may go)."""
    if not keys:
        return []
    origins, ids = [k[0] for k in keys], [k[1] for k in keys]
    cur = await conn.execute(
        "WITH gone AS (SELECT origin, media_id FROM unnest(%s::text[], %s::text[])"
        " AS g(origin, media_id)),"
        " thumbs AS (DELETE FROM media_thumbnails t USING gone"
        " WHERE t.origin = gone.origin AND t.media_id = gone.media_id RETURNING t.sha256),"
        " rows AS (DELETE FROM media m USING gone"
        " WHERE m.origin = gone.origin AND m.media_id = gone.media_id RETURNING m.sha256)"
        " SELECT sha256 FROM thumbs UNION SELECT sha256 FROM rows WHERE sha256 IS NOT NULL",
        (origins, ids),
    )
    hashes = [row[0] for row in await cur.fetchall()]
    if not hashes:
        return []
    return await unreferenced(conn, hashes)


async def user_media_statistics(
    conn: AsyncConnection, origin: str, *, offset: int, limit: int
) -> tuple[list[tuple[str, str | None, int, int]], int]:
    """(user id, display name, media count, bytes) of each uploader, most bytes first."""
    cur = await conn.execute(
        "SELECT m.uploader, p.displayname, count(*), COALESCE(sum(m.size), 0)::bigint,"
        " count(*) OVER () FROM media m LEFT JOIN profiles p ON p.user_id = m.uploader"
        " WHERE m.origin = %s AND m.uploader IS NOT NULL"
        " GROUP BY m.uploader, p.displayname ORDER BY 4 DESC, m.uploader LIMIT %s OFFSET %s",
        (origin, limit, offset),
    )
    rows = await cur.fetchall()
    total = int(rows[0][4]) if rows else 0
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows], total
