"""What admins repair in rooms: forward extremities (read, and trimmed to the latest),
and the figures behind Synapse's statistics pages."""

from __future__ import annotations

from psycopg import AsyncConnection


async def forward_extremities(
    conn: AsyncConnection, room_id: str
) -> list[tuple[str, int | None, int, int]]:
    """(event id, state group, depth, received ts) of each extremity, latest first."""
    cur = await conn.execute(
        "SELECT f.event_id, e.state_group, e.depth, e.origin_server_ts"
        " FROM forward_extremities f JOIN events e USING (event_id) WHERE f.room_id = %s"
        " ORDER BY e.stream_ordering DESC NULLS LAST, e.depth DESC",
        (room_id,),
    )
    return [(row[0], row[1], int(row[2]), int(row[3])) for row in await cur.fetchall()]


async def delete_forward_extremities(conn: AsyncConnection, room_id: str, keep: str) -> int:
    cur = await conn.execute(
        "DELETE FROM forward_extremities WHERE room_id = %s AND event_id <> %s", (room_id, keep)
    )
    return cur.rowcount


async def room_sizes(conn: AsyncConnection) -> list[tuple[str, int]]:
    """An estimate of each room's bytes in the database: its events' JSON, largest first."""
    cur = await conn.execute(
        "SELECT room_id, sum(pg_column_size(json))::bigint AS size FROM events"
        " GROUP BY room_id ORDER BY size DESC"
    )
    return [(room_id, int(size)) for room_id, size in await cur.fetchall()]
