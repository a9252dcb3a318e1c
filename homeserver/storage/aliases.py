"""Room aliases and the room directory's visibility flag."""

from __future__ import annotations

from psycopg import AsyncConnection


async def get_alias(conn: AsyncConnection, alias: str) -> str | None:
    cur = await conn.execute("SELECT room_id FROM room_aliases WHERE room_alias = %s", (alias,))
    row = await cur.fetchone()
    return row[0] if row else None


async def create_alias(
    conn: AsyncConnection, alias: str, room_id: str, creator: str, now_ms: int
) -> bool:
    """False when the alias is taken."""
    cur = await conn.execute(
        "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (alias, room_id, creator, now_ms),
    )
    return cur.rowcount == 1


async def set_room_public(conn: AsyncConnection, room_id: str, public: bool) -> None:
    await conn.execute("UPDATE rooms SET is_public = %s WHERE room_id = %s", (public, room_id))
