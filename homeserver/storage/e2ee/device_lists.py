"""The device-list stream: whose devices or keys changed, and who started or stopped
sharing a room with whom, each at a position of the 'device_lists' stream."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

from homeserver.storage.rooms.memberships import share_a_joined_room


async def add_user_changes(conn: AsyncConnection, position: int, user_ids: list[str]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO device_list_changes (position, user_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            [(position, user_id) for user_id in user_ids],
        )


async def is_joined(conn: AsyncConnection, room_id: str, user_id: str) -> bool:
    """Whether the user's current membership (before this transaction's change) is join."""
    cur = await conn.execute(
        "SELECT 1 FROM room_memberships WHERE room_id = %s AND user_id = %s"
        " AND membership = 'join'",
        (room_id, user_id),
    )
    return await cur.fetchone() is not None


async def add_room_change(
    conn: AsyncConnection, position: int, room_id: str, user_id: str, joined: bool
) -> None:
    await conn.execute(
        "INSERT INTO device_list_room_changes (position, room_id, user_id, joined)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (position, room_id, user_id, joined),
    )


async def joined_rooms(conn: AsyncConnection, user_ids: list[str]) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT room_id FROM room_memberships"
        " WHERE user_id = ANY(%s) AND membership = 'join'",
        (user_ids,),
    )
    return [row[0] for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Candidate:
    user_id: str
    keys_changed: bool  # their devices or keys changed
    moved: bool  # they or the viewer joined or left a room they have in common
    sharing: bool  # they share a room with the viewer now


# Candidates are the users whose devices changed in the range, plus the users whose
# membership moved in a room the viewer is in (or moved in), plus the current members of
# rooms the viewer moved in. Each is then checked for sharing a room with the viewer now,
# by index lookups over the viewer's rooms; the cost follows what changed, not room sizes.
_CHANGES = """
WITH my_rooms AS (
    SELECT room_id FROM room_memberships WHERE user_id = %(viewer)s AND membership = 'join'
), my_moves AS (
    SELECT DISTINCT room_id FROM device_list_room_changes
    WHERE user_id = %(viewer)s AND position > %(from)s AND position <= %(to)s
), candidates AS (
    SELECT user_id, FALSE AS moved FROM device_list_changes
    WHERE position > %(from)s AND position <= %(to)s
    UNION ALL
    SELECT c.user_id, TRUE FROM device_list_room_changes c
    WHERE c.position > %(from)s AND c.position <= %(to)s
      AND (c.room_id IN (SELECT room_id FROM my_rooms)
           OR c.room_id IN (SELECT room_id FROM my_moves))
    UNION ALL
    SELECT m.user_id, TRUE FROM room_memberships m JOIN my_moves USING (room_id)
    WHERE m.membership = 'join'
)
SELECT c.user_id, bool_or(NOT c.moved), bool_or(c.moved), {sharing}
FROM candidates c GROUP BY c.user_id
""".format(sharing=share_a_joined_room("%(viewer)s", "c.user_id"))


async def change_candidates(
    conn: AsyncConnection, viewer: str, from_pos: int, to_pos: int
) -> list[Candidate]:
    cur = await conn.execute(_CHANGES, {"viewer": viewer, "from": from_pos, "to": to_pos})
    return [Candidate(row[0], row[1], row[2], row[3]) for row in await cur.fetchall()]
