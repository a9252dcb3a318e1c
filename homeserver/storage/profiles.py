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
) -> tuple[str | None, str | None]:
    """Set or (with None) clear one field, creating the profile row if needed;
    returns the new (displayname, avatar_url)."""
    column = sql.Identifier(field)
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO profiles (user_id, {column}) VALUES (%s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET {column} = EXCLUDED.{column}"
            " RETURNING displayname, avatar_url"
        ).format(column=column),
        (user_id, value),
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]
