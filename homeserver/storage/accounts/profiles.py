"""User profiles: display name and avatar in their own columns, other fields in a
`jsonb` object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

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


@dataclass(frozen=True, slots=True)
class FullProfile:
    displayname: str | None
    avatar_url: str | None
    fields: dict[str, Any]  # every other field, by key


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda obj: orjson.dumps(obj).decode())


async def get_full_profile(conn: AsyncConnection, user_id: str) -> FullProfile | None:
    """Every field of a user with a profile row, else None."""
    cur = await conn.execute(
        "SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    return FullProfile(row[0], row[1], row[2]) if row else None


async def lock_profile(conn: AsyncConnection, user_id: str) -> FullProfile:
    """The profile, created empty if missing, locked until the transaction ends: the
    size limit holds for the whole profile, so concurrent changes are serialised."""
    await conn.execute(
        "INSERT INTO profiles (user_id) VALUES (%s) ON CONFLICT (user_id) DO NOTHING", (user_id,)
    )
    cur = await conn.execute(
        "SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = %s FOR UPDATE",
        (user_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return FullProfile(row[0], row[1], row[2])


async def set_extra_field(conn: AsyncConnection, user_id: str, key: str, value: Any) -> None:
    """Set one field other than displayname and avatar_url (the row must exist)."""
    await conn.execute(
        "UPDATE profiles SET fields = fields || jsonb_build_object(%s::text, %s::jsonb)"
        " WHERE user_id = %s",
        (key, _jsonb(value), user_id),
    )


async def delete_extra_field(conn: AsyncConnection, user_id: str, key: str) -> None:
    await conn.execute(
        "UPDATE profiles SET fields = fields - %s::text WHERE user_id = %s", (key, user_id)
    )
