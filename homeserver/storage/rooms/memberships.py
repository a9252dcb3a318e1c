"""Current membership of users in rooms."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class MembershipRow:
    room_id: str
    user_id: str
    membership: str
    event_id: str
    sender: str
    stream_ordering: int
    displayname: str | None
    avatar_url: str | None


async def upsert_membership(conn: AsyncConnection, row: MembershipRow) -> None:
    await conn.execute(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender,"
        " stream_ordering, displayname, avatar_url) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership,"
        " event_id = EXCLUDED.event_id, sender = EXCLUDED.sender,"
        " stream_ordering = EXCLUDED.stream_ordering, displayname = EXCLUDED.displayname,"
        " avatar_url = EXCLUDED.avatar_url, forgotten = FALSE",
        (
            row.room_id,
            row.user_id,
            row.membership,
            row.event_id,
            row.sender,
            row.stream_ordering,
            row.displayname,
            row.avatar_url,
        ),
    )


def share_a_joined_room(viewer: str, other: str) -> str:
    """An SQL condition: `viewer` and `other` (SQL expressions) are both joined to some
    room. It walks the viewer's joined rooms and looks the other up in each by key, so
    it reads at most the viewer's rooms. `OFFSET 0` keeps the inner lookup a subplan
    run per room: pulled up into a join, a planner without statistics (no autovacuum,
    so no ANALYZE) scans all the other's rooms for each of the viewer's instead
    (tests/integration/test_membership_plans.py)."""
    return (
        "EXISTS (SELECT 1 FROM room_memberships mine"
        f" WHERE mine.user_id = {viewer} AND mine.membership = 'join'"
        " AND EXISTS (SELECT 1 FROM room_memberships theirs"
        f" WHERE theirs.room_id = mine.room_id AND theirs.user_id = {other}"
        " AND theirs.membership = 'join' OFFSET 0))"
    )


_COLUMNS = (
    "room_id, user_id, membership, event_id, sender, stream_ordering, displayname, avatar_url"
)


async def get_membership(conn: AsyncConnection, room_id: str, user_id: str) -> MembershipRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM room_memberships WHERE room_id = %s AND user_id = %s",
        (room_id, user_id),
    )
    row = await cur.fetchone()
    return MembershipRow(*row) if row else None


async def rooms_of_user(
    conn: AsyncConnection, user_id: str, memberships: tuple[str, ...] = ("join",)
) -> list[MembershipRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM room_memberships WHERE user_id = %s AND membership = ANY(%s)"
        " AND NOT forgotten",
        (user_id, list(memberships)),
    )
    return [MembershipRow(*row) for row in await cur.fetchall()]


async def members_of_room(
    conn: AsyncConnection, room_id: str, memberships: tuple[str, ...] = ("join",)
) -> list[MembershipRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM room_memberships WHERE room_id = %s AND membership = ANY(%s)",
        (room_id, list(memberships)),
    )
    return [MembershipRow(*row) for row in await cur.fetchall()]


async def forget_room(conn: AsyncConnection, room_id: str, user_id: str) -> bool:
    cur = await conn.execute(
        "UPDATE room_memberships SET forgotten = TRUE"
        " WHERE room_id = %s AND user_id = %s AND membership IN ('leave', 'ban')",
        (room_id, user_id),
    )
    return cur.rowcount == 1


async def deactivated_members(conn: AsyncConnection) -> list[str]:
    """Deactivated local users still joined, invited or knocking somewhere: the leaves
    a deactivation has yet to send."""
    cur = await conn.execute(
        "SELECT DISTINCT m.user_id FROM users u JOIN room_memberships m ON m.user_id = u.user_id"
        " WHERE u.deactivated AND m.membership IN ('join', 'invite', 'knock')"
        " ORDER BY m.user_id"
    )
    return [row[0] for row in await cur.fetchall()]
