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


async def user_exists(conn: AsyncConnection, user_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return await cur.fetchone() is not None


async def get_login_info(conn: AsyncConnection, user_id: str) -> tuple[str | None, bool] | None:
    """(password hash, deactivated) of a user, or None when there is no such user."""
    cur = await conn.execute(
        "SELECT password_hash, deactivated FROM users WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    return (row[0], bool(row[1])) if row else None


async def is_locked(conn: AsyncConnection, user_id: str) -> bool:
    cur = await conn.execute("SELECT locked FROM users WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def set_password_hash(conn: AsyncConnection, user_id: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id)
    )


async def deactivate_user(conn: AsyncConnection, user_id: str, *, erase: bool) -> None:
    """Mark the account deactivated (and erased if asked) and forget its password."""
    await conn.execute(
        "UPDATE users SET deactivated = TRUE, erased = erased OR %s, password_hash = NULL"
        " WHERE user_id = %s",
        (erase, user_id),
    )
