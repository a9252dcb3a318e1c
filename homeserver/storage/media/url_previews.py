"""The link-preview cache: the latest preview (or fetch failure) of each URL, with the
time it stops being served, shared by every worker process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# Expired rows deleted per insert: keeps the table at the size of what is in use without
# a background task, and bounds the work any one request does.
PRUNE_BATCH = 100


@dataclass(frozen=True, slots=True)
class CachedPreview:
    url: str
    fetched_ts: int
    expires_ts: int
    preview: dict[str, Any] | None  # None when the fetch failed
    errcode: str | None
    error: str | None


async def get_preview(conn: AsyncConnection, url: str, now_ms: int) -> CachedPreview | None:
    """The cached answer for `url`, unless it has expired."""
    cur = await conn.execute(
        "SELECT url, fetched_ts, expires_ts, preview, errcode, error FROM url_previews"
        " WHERE url = %s AND expires_ts > %s",
        (url, now_ms),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return CachedPreview(row[0], row[1], row[2], row[3], row[4], row[5])


async def put_preview(
    conn: AsyncConnection,
    url: str,
    *,
    fetched_ts: int,
    expires_ts: int,
    preview: dict[str, Any] | None,
    errcode: str | None = None,
    error: str | None = None,
) -> None:
    """Store (or replace) the answer for `url`, and prune a batch of expired ones."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO url_previews (url, fetched_ts, expires_ts, preview, errcode, error)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (url) DO UPDATE SET fetched_ts = EXCLUDED.fetched_ts,"
            " expires_ts = EXCLUDED.expires_ts, preview = EXCLUDED.preview,"
            " errcode = EXCLUDED.errcode, error = EXCLUDED.error",
            (
                url,
                fetched_ts,
                expires_ts,
                Jsonb(preview) if preview is not None else None,
                errcode,
                error,
            ),
        )
        await conn.execute(
            "DELETE FROM url_previews WHERE url IN (SELECT url FROM url_previews"
            " WHERE expires_ts <= %s ORDER BY expires_ts LIMIT %s)",
            (fetched_ts, PRUNE_BATCH),
        )
