"""Which servers have users joined to a room: where EDUs about the room, or about a
user in it, must go. A server name is the part of a user ID after the first colon."""

from __future__ import annotations

from psycopg import AsyncConnection

_DOMAIN = "substring(m.user_id from position(':' in m.user_id) + 1)"


async def servers_in_room(conn: AsyncConnection, room_id: str) -> set[str]:
    """Servers with at least one joined member (and, while the room's state is partial,
    the servers the resident named): the destinations of the room's events."""
    cur = await conn.execute(
        f"SELECT DISTINCT {_DOMAIN} FROM room_memberships m"
        " WHERE m.room_id = %s AND m.membership = 'join'"
        # A room joined with partial state: the resident's list stands in for the
        # members we do not know yet.
        " UNION SELECT unnest(servers) FROM partial_state_rooms"
        " WHERE room_id = %s AND full_at IS NULL",
        (room_id, room_id),
    )
    return {row[0] for row in await cur.fetchall()}


async def servers_sharing_room(conn: AsyncConnection, user_id: str) -> list[str]:
    """Servers with a user joined to any room `user_id` is joined to."""
    cur = await conn.execute(
        f"SELECT DISTINCT {_DOMAIN} FROM room_memberships mine"
        " JOIN room_memberships m ON m.room_id = mine.room_id"
        " WHERE mine.user_id = %s AND mine.membership = 'join' AND m.membership = 'join'",
        (user_id,),
    )
    return [row[0] for row in await cur.fetchall()]


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def tracked_by_us(conn: AsyncConnection, user_ids: list[str], server_name: str) -> set[str]:
    """Those of `user_ids` who share a joined room with a user of `server_name`: the
    remote users whose device lists their servers keep us told about."""
    cur = await conn.execute(
        "SELECT DISTINCT theirs.user_id FROM room_memberships theirs"
        " JOIN room_memberships ours ON ours.room_id = theirs.room_id"
        " WHERE theirs.user_id = ANY(%s) AND theirs.membership = 'join'"
        " AND ours.membership = 'join' AND ours.user_id LIKE %s",
        (user_ids, "%:" + like_escape(server_name)),
    )
    return {row[0] for row in await cur.fetchall()}
