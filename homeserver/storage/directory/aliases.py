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
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (alias, room_id, creator, now_ms),
    )
    # A fetched result, not rowcount: this runs inside pipelined room transactions.
    return await cur.fetchone() is not None


async def set_room_public(conn: AsyncConnection, room_id: str, public: bool) -> None:
    await conn.execute("UPDATE rooms SET is_public = %s WHERE room_id = %s", (public, room_id))


async def get_alias_row(conn: AsyncConnection, alias: str) -> tuple[str, str] | None:
    """(room_id, creator) of an alias."""
    cur = await conn.execute(
        "SELECT room_id, creator FROM room_aliases WHERE room_alias = %s", (alias,)
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


async def delete_alias(conn: AsyncConnection, alias: str) -> bool:
    cur = await conn.execute("DELETE FROM room_aliases WHERE room_alias = %s RETURNING 1", (alias,))
    return await cur.fetchone() is not None


async def aliases_of_room(conn: AsyncConnection, room_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT room_alias FROM room_aliases WHERE room_id = %s ORDER BY created_ts, room_alias",
        (room_id,),
    )
    return [row[0] for row in await cur.fetchall()]


async def aliases_pointing_at(conn: AsyncConnection, aliases: list[str], room_id: str) -> set[str]:
    """Which of `aliases` are ours and point at `room_id`."""
    cur = await conn.execute(
        "SELECT room_alias FROM room_aliases WHERE room_alias = ANY(%s) AND room_id = %s",
        (aliases, room_id),
    )
    return {row[0] for row in await cur.fetchall()}


async def move_aliases(conn: AsyncConnection, old_room_id: str, new_room_id: str) -> None:
    await conn.execute(
        "UPDATE room_aliases SET room_id = %s WHERE room_id = %s", (new_room_id, old_room_id)
    )
