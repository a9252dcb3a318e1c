"""What we last announced over federation about each device of a local user
(m.device_list_update): its per-user stream id and a digest of the announced content."""

from __future__ import annotations

from psycopg import AsyncConnection


async def lock_user(conn: AsyncConnection, user_id: str) -> None:
    """Serialise announcing one user's changes (across worker processes) until commit."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('device_list_outbound:' || %s, 0))",
        (user_id,),
    )


async def announced(conn: AsyncConnection, user_id: str) -> dict[str, tuple[int, str | None]]:
    """device id -> (stream id, digest; None when announced deleted)."""
    cur = await conn.execute(
        "SELECT device_id, stream_id, digest FROM device_list_outbound WHERE user_id = %s",
        (user_id,),
    )
    return {row[0]: (row[1], row[2]) for row in await cur.fetchall()}


async def record(
    conn: AsyncConnection, user_id: str, device_id: str, stream_id: int, digest: str | None
) -> None:
    await conn.execute(
        "INSERT INTO device_list_outbound (user_id, device_id, stream_id, digest)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, device_id)"
        " DO UPDATE SET stream_id = EXCLUDED.stream_id, digest = EXCLUDED.digest",
        (user_id, device_id, stream_id, digest),
    )


async def latest_stream_id(conn: AsyncConnection, user_id: str) -> int:
    cur = await conn.execute(
        "SELECT COALESCE(max(stream_id), 0) FROM device_list_outbound WHERE user_id = %s",
        (user_id,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
