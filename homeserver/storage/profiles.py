"""User profiles: display name and avatar."""

from __future__ import annotations

from typing import Literal

from psycopg import AsyncConnection, sql

ProfileField = Literal["displayname", "avatar_url"]


async def get_profile(conn: AsyncConnection, user_id: str) -> tuple[str | None, str | None] | None:
    """(displayname, avatar_url) of a user with a profile row, else None."""
    cur = await conn.execute(
        "SELECT displayname, avatar_url FROM profiles WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


async def set_profile_field(
    conn: AsyncConnection, user_id: str, field: ProfileField, value: str | None
) -> None:
    """Set or (with None) clear one field, creating the profile row if needed."""
    column = sql.Identifier(field)
    await conn.execute(
        sql.SQL(
            "INSERT INTO profiles (user_id, {column}) VALUES (%s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET {column} = EXCLUDED.{column}"
        ).format(column=column),
        (user_id, value),
    )
