"""User accounts."""

from __future__ import annotations

from psycopg import AsyncConnection


async def create_user(
    conn: AsyncConnection,
    user_id: str,
    password_hash: str | None,
    *,
    is_admin: bool,
    is_guest: bool,
    now_ms: int,
) -> bool:
    """Insert a user; False when the id is taken."""
    cur = await conn.execute(
        "INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
        (user_id, password_hash, is_admin, is_guest, now_ms),
    )
    return cur.rowcount == 1


async def get_password_hash(conn: AsyncConnection, user_id: str) -> str | None:
    cur = await conn.execute(
        "SELECT password_hash FROM users WHERE user_id = %s AND NOT deactivated", (user_id,)
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def user_exists(conn: AsyncConnection, user_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return await cur.fetchone() is not None
