"""History fetched from other servers: where our copy of a room's timeline begins
(the events it starts from cite prev events we lack), and placing backfilled events
in the timeline with negative stream orderings, so that they sort by depth in
/messages and never reach an incremental sync."""

from __future__ import annotations

from psycopg import AsyncConnection

from homeserver.storage.events import NewEvent, insert_event


async def holds_room_start(conn: AsyncConnection, room_id: str) -> bool:
    """Whether the room's create event is in our timeline: then we hold its history
    from the beginning (we created the room, or backfilled all of it)."""
    cur = await conn.execute(
        "SELECT 1 FROM events WHERE room_id = %s AND type = 'm.room.create'"
        " AND state_key = '' AND stream_ordering IS NOT NULL",
        (room_id,),
    )
    return await cur.fetchone() is not None


async def backward_extremities(conn: AsyncConnection, room_id: str, limit: int) -> list[str]:
    """Prev events of the room's earliest timeline events that are not in the timeline
    themselves (unknown, or held as outliers), earliest first; rejected ones are left
    out, asking again would not change them."""
    cur = await conn.execute(
        "SELECT p.prev_event_id, min(e.depth) AS depth FROM events e"
        " JOIN event_edges p USING (event_id)"
        " LEFT JOIN events pe ON pe.event_id = p.prev_event_id"
        " WHERE e.room_id = %s AND e.stream_ordering IS NOT NULL"
        " AND (pe.event_id IS NULL OR (pe.state_group IS NULL AND pe.rejected_reason IS NULL))"
        " GROUP BY p.prev_event_id ORDER BY depth, p.prev_event_id LIMIT %s",
        (room_id, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def place(conn: AsyncConnection, event: NewEvent, state_group: int, *, outlier: bool) -> int:
    """Put a backfilled event in the timeline (an outlier we held, or a new row) with
    the state after it; its stream ordering."""
    cur = await conn.execute("SELECT -nextval('backfill_ordering')")
    row = await cur.fetchone()
    assert row is not None
    ordering = int(row[0])
    if outlier:
        await conn.execute(
            "UPDATE events SET stream_ordering = %s, state_group = %s"
            " WHERE event_id = %s AND stream_ordering IS NULL",
            (ordering, state_group, event.event_id),
        )
    else:
        await insert_event(conn, event, stream_ordering=ordering, state_group=state_group)
    return ordering
