"""What admins repair in rooms: forward extremities (read, and trimmed to the latest),
old history purged, and the figures behind Synapse's statistics pages."""

from __future__ import annotations

from psycopg import AsyncConnection, sql

# First key of the two-key advisory lock form: a namespace for history purges.
_PURGE_NAMESPACE = 0x50726748  # "PrgH"


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


async def purge_point(
    conn: AsyncConnection, room_id: str, event_id: str | None, ts: int | None
) -> int | None:
    """The stream position history is purged before: that of `event_id` (kept, as is
    what shares its depth) or of the room's first event at or after `ts`."""
    if event_id is not None:
        cur = await conn.execute(
            "SELECT min(o.stream_ordering) FROM events e JOIN events o"
            " ON o.room_id = e.room_id AND o.depth = e.depth"
            " WHERE e.event_id = %s AND e.room_id = %s",
            (event_id, room_id),
        )
    else:
        # Past the room's last event: all of it (forward extremities stay regardless).
        cur = await conn.execute(
            "SELECT COALESCE(min(stream_ordering) FILTER (WHERE origin_server_ts >= %s),"
            " max(stream_ordering) + 1) FROM events WHERE room_id = %s",
            (ts, room_id),
        )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def has_events_before(conn: AsyncConnection, room_id: str, before: int) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM events WHERE room_id = %s AND stream_ordering < %s LIMIT 1",
        (room_id, before),
    )
    return await cur.fetchone() is not None


async def lock_purges(conn: AsyncConnection, room_id: str) -> None:
    """Wait for any other purge of the room, in any process, to commit (a transaction
    lock: purges of one room run one after the other, the room's writers are not held)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PURGE_NAMESPACE, room_id)
    )


async def purge_history(
    conn: AsyncConnection, room_id: str, before: int, local_suffix: str | None
) -> int:
    """Delete the room's non-state events before stream position `before`, but for
    forward extremities and (given `local_suffix`, ':ourserver') our users' events.
    How many events went (call inside a transaction)."""
    await conn.execute(
        "CREATE TEMPORARY TABLE purged ON COMMIT DROP AS"
        " SELECT e.event_id, e.stream_ordering FROM events e"
        " WHERE e.room_id = %s AND e.stream_ordering < %s AND e.state_key IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM forward_extremities f WHERE f.event_id = e.event_id)"
        " AND (%s::text IS NULL OR NOT e.sender LIKE '%%' || %s::text)",
        (room_id, before, local_suffix, local_suffix),
    )
    for table in ("event_edges", "event_txn_ids"):
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE event_id IN (SELECT event_id FROM purged)").format(
                sql.Identifier(table)
            )
        )
    for table in ("event_push_actions", "event_push_room_actions"):
        await conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE room_id = %s"
                " AND stream_ordering IN (SELECT stream_ordering FROM purged)"
            ).format(sql.Identifier(table)),
            (room_id,),
        )
    cur = await conn.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM purged)")
    return cur.rowcount
