"""History fetched from other servers: the holes in a room's timeline (timeline events
citing prev events we do not hold in it, see `backfill_gaps`), and placing backfilled
events in the timeline with negative stream orderings, so that they sort by depth in
/messages and never reach an incremental sync."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import AsyncConnection

from homeserver.storage.rooms.events import NewEvent, insert_event

# A prev event is missing from the timeline when we lack it or hold it only as an
# outlier; rejected and soft-failed events (which have a state group) are not missing:
# fetching them again would not change them.
_MISSING = "(pe.event_id IS NULL OR (pe.state_group IS NULL AND pe.rejected_reason IS NULL))"

# Until a gap that could not be filled is tried again: doubling from a minute, at most
# a day (a server that was down may come back, one that refuses rarely changes).
_RETRY = "least(interval '1 minute' * power(2, g.attempts), interval '1 day')"


async def note_placed(
    conn: AsyncConnection,
    room_id: str,
    event_id: str,
    prev_event_ids: Sequence[str],
    *,
    in_timeline: bool,
) -> None:
    """After an event is stored with its state: the gaps it closes (it was their missing
    prev event) go, and when it joined the timeline, the gaps it opens (its prev events
    missing from the timeline) are recorded. One statement."""
    if not in_timeline or not prev_event_ids:
        await conn.execute("DELETE FROM backfill_gaps WHERE prev_event_id = %s", (event_id,))
        return
    await conn.execute(
        "WITH closed AS (DELETE FROM backfill_gaps WHERE prev_event_id = %(event_id)s)"
        " INSERT INTO backfill_gaps (room_id, event_id, prev_event_id)"
        " SELECT %(room_id)s, %(event_id)s, p.id FROM unnest(%(prevs)s::text[]) AS p(id)"
        " LEFT JOIN events pe ON pe.event_id = p.id"
        f" WHERE {_MISSING} ON CONFLICT DO NOTHING",
        {"room_id": room_id, "event_id": event_id, "prevs": list(prev_event_ids)},
    )


async def due_gap_prevs(conn: AsyncConnection, event_id: str, limit: int) -> list[str]:
    """The missing prev events of a gap at `event_id` that are due to be asked for;
    rows whose prev event has meanwhile been placed (or rejected) are dropped."""
    await conn.execute(
        "DELETE FROM backfill_gaps g USING events pe WHERE g.event_id = %s"
        " AND pe.event_id = g.prev_event_id"
        " AND (pe.state_group IS NOT NULL OR pe.rejected_reason IS NOT NULL)",
        (event_id,),
    )
    cur = await conn.execute(
        "SELECT prev_event_id FROM backfill_gaps WHERE event_id = %s AND retry_after <= now()"
        " ORDER BY prev_event_id LIMIT %s",
        (event_id, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def gap_failed(conn: AsyncConnection, event_id: str, prev_event_ids: Iterable[str]) -> None:
    """Nobody could fill these prev events of the gap at `event_id`: try again later."""
    await conn.execute(
        f"UPDATE backfill_gaps g SET attempts = g.attempts + 1, retry_after = now() + {_RETRY}"
        " WHERE g.event_id = %s AND g.prev_event_id = ANY(%s)",
        (event_id, list(prev_event_ids)),
    )


async def redactions_targeting(
    conn: AsyncConnection, room_id: str, target_ids: Iterable[str]
) -> list[tuple[str, int]]:
    """Redactions in the room's timeline (accepted, not soft-failed) of any of these
    events, with the state group after each: (redaction id, state group)."""
    targets = list(target_ids)
    if not targets:
        return []
    cur = await conn.execute(
        "SELECT e.event_id, e.state_group FROM events e"
        " WHERE e.room_id = %s AND e.type = 'm.room.redaction'"
        " AND e.stream_ordering IS NOT NULL AND e.state_group IS NOT NULL"
        " AND e.rejected_reason IS NULL AND NOT e.soft_failed"
        " AND coalesce(e.json::jsonb ->> 'redacts', e.json::jsonb #>> '{content,redacts}')"
        " = ANY(%s)",
        (room_id, targets),
    )
    return [(eid, int(group)) for eid, group in await cur.fetchall()]


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
