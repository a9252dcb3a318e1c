"""Reads and writes on rooms that only server admins make: every room with the facts
admin tools show about it, blocking rooms, and purging a room from the database."""

from __future__ import annotations

from dataclasses import dataclass, fields

from psycopg import AsyncConnection, sql


@dataclass(frozen=True, slots=True)
class AdminRoomRow:
    room_id: str
    name: str | None
    canonical_alias: str | None
    topic: str | None
    avatar: str | None
    joined_members: int
    joined_local_members: int
    version: str
    creator: str | None
    encryption: str | None
    federatable: bool
    public: bool
    join_rules: str | None
    guest_access: str | None
    history_visibility: str | None
    state_events: int
    room_type: str | None


# Events whose JSON PostgreSQL's jsonb cannot hold (NUL, lone surrogates) read as null.
_CONTENT = (
    "(SELECT CASE WHEN e.json !~ '\\\\u(0000|[dD][89a-fA-F])' THEN e.json::jsonb -> 'content' END"
    " FROM current_state cs JOIN events e ON e.event_id = cs.event_id"
    " WHERE cs.room_id = r.room_id AND cs.type = '{type}' AND cs.state_key = ''"
    " AND e.redacted_by IS NULL)"
)


def room_text(event_type: str, key: str) -> str:
    """A string field of a current state event's content (null when not a string)."""
    content = _CONTENT.format(type=event_type)
    return (
        f"(SELECT CASE WHEN jsonb_typeof(c -> '{key}') = 'string' THEN c ->> '{key}' END"
        f" FROM {content} AS t(c))"
    )


_SUMMARY = f"""
    SELECT r.room_id,
        {room_text("m.room.name", "name")} AS name,
        {room_text("m.room.canonical_alias", "alias")} AS canonical_alias,
        {room_text("m.room.topic", "topic")} AS topic,
        {room_text("m.room.avatar", "url")} AS avatar,
        (SELECT count(*) FROM room_memberships m
            WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined_members,
        (SELECT count(*) FROM room_memberships m
            WHERE m.room_id = r.room_id AND m.membership = 'join'
            AND m.user_id LIKE %(local_users)s) AS joined_local_members,
        r.room_version AS version,
        r.creator,
        {room_text("m.room.encryption", "algorithm")} AS encryption,
        COALESCE((SELECT CASE WHEN jsonb_typeof(c -> 'm.federate') = 'boolean'
            THEN (c ->> 'm.federate')::boolean END
            FROM {_CONTENT.format(type="m.room.create")} AS t(c)), TRUE) AS federatable,
        r.is_public AS public,
        {room_text("m.room.join_rules", "join_rule")} AS join_rules,
        {room_text("m.room.guest_access", "guest_access")} AS guest_access,
        {room_text("m.room.history_visibility", "history_visibility")} AS history_visibility,
        (SELECT count(*) FROM current_state cs WHERE cs.room_id = r.room_id) AS state_events,
        {room_text("m.room.create", "type")} AS room_type
    FROM rooms r
"""

_COLUMNS = ", ".join(f.name for f in fields(AdminRoomRow))

# The columns a listing may be ordered by: every field admin tools sort on.
ORDER_COLUMNS = frozenset(
    {
        "name",
        "canonical_alias",
        "joined_members",
        "joined_local_members",
        "version",
        "creator",
        "encryption",
        "federatable",
        "public",
        "join_rules",
        "guest_access",
        "history_visibility",
        "state_events",
    }
)


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_rooms(
    conn: AsyncConnection,
    server_name: str,
    *,
    search_term: str | None,
    order_by: str,
    ascending: bool,
    offset: int,
    limit: int,
) -> tuple[list[AdminRoomRow], int]:
    """One page of rooms and how many match in all; `search_term` matches part of the
    name or canonical alias, or the whole room id. Ties are broken by room id."""
    assert order_by in ORDER_COLUMNS
    direction = sql.SQL("ASC" if ascending else "DESC")
    where = sql.SQL(
        "%(term)s::text IS NULL OR s.name ILIKE %(pattern)s"
        " OR s.canonical_alias ILIKE %(pattern)s OR s.room_id = %(term)s"
    )
    params = {
        "local_users": "%:" + _like(server_name)[1:-1],
        "term": search_term,
        "pattern": _like(search_term or ""),
    }
    cur = await conn.execute(
        sql.SQL(
            "WITH s AS (" + _SUMMARY + ") SELECT " + _COLUMNS + ", count(*) OVER ()"
            " FROM s WHERE {where}"
            " ORDER BY {column} {direction} NULLS LAST, room_id {direction}"
            " LIMIT %(limit)s OFFSET %(offset)s"
        ).format(where=where, column=sql.Identifier(order_by), direction=direction),
        {**params, "limit": limit, "offset": offset},
    )
    rows = await cur.fetchall()
    if rows:
        return [AdminRoomRow(*row[:-1]) for row in rows], int(rows[0][-1])
    # Past the last page: still say how many there are.
    count = await conn.execute(
        sql.SQL("WITH s AS (" + _SUMMARY + ") SELECT count(*) FROM s WHERE {where}").format(
            where=where
        ),
        params,
    )
    total = await count.fetchone()
    return [], int(total[0]) if total else 0


async def get_room(conn: AsyncConnection, server_name: str, room_id: str) -> AdminRoomRow | None:
    cur = await conn.execute(
        "WITH s AS (" + _SUMMARY + ") SELECT " + _COLUMNS + " FROM s WHERE room_id = %(room_id)s",
        {"local_users": "%:" + _like(server_name)[1:-1], "room_id": room_id},
    )
    row = await cur.fetchone()
    return AdminRoomRow(*row) if row else None


async def local_facts(conn: AsyncConnection, server_name: str, room_id: str) -> tuple[int, bool]:
    """What only a room's page shows (too dear for every row of a listing): how many
    devices its joined local users have, and whether every local user with a
    membership has forgotten it (true when none is left)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM devices d JOIN room_memberships m"
        "   ON m.user_id = d.user_id AND m.room_id = %(room_id)s AND m.membership = 'join'"
        "   WHERE m.user_id LIKE %(local_users)s),"
        " NOT EXISTS (SELECT 1 FROM room_memberships m WHERE m.room_id = %(room_id)s"
        "   AND m.user_id LIKE %(local_users)s AND NOT m.forgotten)",
        {"local_users": "%:" + _like(server_name)[1:-1], "room_id": room_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


async def block_room(conn: AsyncConnection, room_id: str, blocked_by: str, now_ms: int) -> None:
    await conn.execute(
        "INSERT INTO blocked_rooms (room_id, blocked_by, created_ts) VALUES (%s, %s, %s)"
        " ON CONFLICT (room_id) DO NOTHING",
        (room_id, blocked_by, now_ms),
    )


async def unblock_room(conn: AsyncConnection, room_id: str) -> None:
    await conn.execute("DELETE FROM blocked_rooms WHERE room_id = %s", (room_id,))


async def blocked_by(conn: AsyncConnection, room_id: str) -> str | None:
    """The admin who blocked the room, or None when it is not blocked."""
    cur = await conn.execute("SELECT blocked_by FROM blocked_rooms WHERE room_id = %s", (room_id,))
    row = await cur.fetchone()
    return str(row[0]) if row else None


# Tables holding rows of one room, by their room_id column; state groups and events
# go last, after the rows that point at them.
_ROOM_TABLES = (
    "account_data",
    "backfill_gaps",
    "current_state",
    "device_list_room_changes",
    "event_push_actions",
    "event_push_folded",
    "event_push_room_actions",
    "event_push_summary",
    "event_reports",
    "forward_extremities",
    "invite_stripped_state",
    "push_member_spans",
    "receipts",
    "room_aliases",
    "room_memberships",
    "room_reports",
    "room_tags",
)


async def purge_room(conn: AsyncConnection, room_id: str) -> None:
    """Delete everything the database holds about a room: its events, state, members,
    aliases, receipts, tags and the room itself (call inside a transaction). Users'
    key backups of the room stay: they belong to the users, not the room."""
    for table in _ROOM_TABLES:
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE room_id = %s").format(sql.Identifier(table)), (room_id,)
        )
    await conn.execute(
        "DELETE FROM event_edges"
        " WHERE event_id IN (SELECT event_id FROM events WHERE room_id = %s)",
        (room_id,),
    )
    await conn.execute(
        "DELETE FROM event_txn_ids"
        " WHERE event_id IN (SELECT event_id FROM events WHERE room_id = %s)",
        (room_id,),
    )
    await conn.execute("UPDATE rooms SET current_state_group = NULL WHERE room_id = %s", (room_id,))
    await conn.execute("DELETE FROM events WHERE room_id = %s", (room_id,))
    await conn.execute(
        "DELETE FROM state_group_entries"
        " WHERE state_group IN (SELECT id FROM state_groups WHERE room_id = %s)",
        (room_id,),
    )
    await conn.execute("DELETE FROM state_groups WHERE room_id = %s", (room_id,))
    await conn.execute("DELETE FROM rooms WHERE room_id = %s", (room_id,))
