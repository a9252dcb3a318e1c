"""Moderation flags on accounts (shadow-banned, suspended, locked), rate-limit
overrides, and the whole-account reads admins make (every membership, all account data)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from psycopg import AsyncConnection, sql

Flag = Literal["shadow_banned", "suspended", "locked"]


async def set_flag(conn: AsyncConnection, user_id: str, flag: Flag, value: bool) -> bool:
    """False when there is no such account."""
    cur = await conn.execute(
        sql.SQL("UPDATE users SET {} = %s WHERE user_id = %s").format(sql.Identifier(flag)),
        (value, user_id),
    )
    return cur.rowcount == 1


async def get_flag(conn: AsyncConnection, user_id: str, flag: Flag) -> bool | None:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users WHERE user_id = %s").format(sql.Identifier(flag)),
        (user_id,),
    )
    row = await cur.fetchone()
    return None if row is None else bool(row[0])


async def get_override(conn: AsyncConnection, user_id: str) -> tuple[float, int] | None:
    cur = await conn.execute(
        "SELECT messages_per_second, burst_count FROM ratelimit_overrides WHERE user_id = %s",
        (user_id,),
    )
    row = await cur.fetchone()
    return None if row is None else (float(row[0]), int(row[1]))


async def set_override(
    conn: AsyncConnection, user_id: str, per_second: float, burst_count: int
) -> None:
    await conn.execute(
        "INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count)"
        " VALUES (%s, %s, %s) ON CONFLICT (user_id) DO UPDATE"
        " SET messages_per_second = EXCLUDED.messages_per_second,"
        " burst_count = EXCLUDED.burst_count",
        (user_id, per_second, burst_count),
    )


async def delete_override(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("DELETE FROM ratelimit_overrides WHERE user_id = %s", (user_id,))


async def memberships_of_user(conn: AsyncConnection, user_id: str) -> dict[str, str]:
    """Every room the server knows a membership of the user in, and that membership."""
    cur = await conn.execute(
        "SELECT room_id, membership FROM room_memberships WHERE user_id = %s", (user_id,)
    )
    return {room_id: membership for room_id, membership in await cur.fetchall()}


async def all_account_data(conn: AsyncConnection, user_id: str) -> list[tuple[str, str, Any]]:
    """(room id, '' for global; type; content) of every account data of the user."""
    cur = await conn.execute(
        "SELECT room_id, type, content::text FROM account_data WHERE user_id = %s", (user_id,)
    )
    return [
        (room_id, kind, orjson.loads(content)) for room_id, kind, content in await cur.fetchall()
    ]
