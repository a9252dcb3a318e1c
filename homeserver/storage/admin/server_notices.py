"""Each user's server-notices room: the private room the notices account writes to."""

from __future__ import annotations

from psycopg import AsyncConnection


async def room_of(conn: AsyncConnection, user_id: str) -> str | None:
    cur = await conn.execute(
        "SELECT room_id FROM server_notice_rooms WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def set_room(conn: AsyncConnection, user_id: str, room_id: str) -> None:
    await conn.execute(
        "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (%s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET room_id = EXCLUDED.room_id",
        (user_id, room_id),
    )
