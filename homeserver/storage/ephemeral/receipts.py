"""Read receipts: the latest one per (room, type, user, thread), on the receipts stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection

UNTHREADED = ""  # thread_id of receipts that name no thread


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    ts: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class ReceiptTarget:
    """What a receipt needs to know about the event it acknowledges."""

    room_id: str
    stream_ordering: int | None
    relates_to: str | None
    rel_type: str | None


async def receipt_target(conn: AsyncConnection, event_id: str) -> ReceiptTarget | None:
    cur = await conn.execute(
        "SELECT room_id, stream_ordering, relates_to, rel_type FROM events WHERE event_id = %s",
        (event_id,),
    )
    row = await cur.fetchone()
    return ReceiptTarget(*row) if row else None


async def upsert_receipt(
    conn: AsyncConnection,
    row: ReceiptRow,
    event_stream_ordering: int | None,
) -> bool:
    """Store a receipt unless the stored one acknowledges a later event; True if stored."""
    cur = await conn.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
        " event_stream_ordering, ts, stream_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
        " event_id = EXCLUDED.event_id, event_stream_ordering = EXCLUDED.event_stream_ordering,"
        " ts = EXCLUDED.ts, stream_id = EXCLUDED.stream_id"
        " WHERE receipts.event_stream_ordering IS NULL"
        " OR EXCLUDED.event_stream_ordering IS NULL"
        " OR EXCLUDED.event_stream_ordering > receipts.event_stream_ordering",
        (
            row.room_id,
            row.receipt_type,
            row.user_id,
            row.thread_id,
            row.event_id,
            event_stream_ordering,
            row.ts,
            row.stream_id,
        ),
    )
    return cur.rowcount == 1


async def receipts_in_rooms(
    conn: AsyncConnection,
    room_ids: Sequence[str],
    after: int,
    up_to: int,
    viewer: str,
    private_type: str,
) -> list[ReceiptRow]:
    """Receipts in these rooms at stream positions in (after, up_to]; receipts of
    `private_type` only when they are the viewer's own."""
    if not room_ids:
        return []
    cur = await conn.execute(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
        " FROM receipts WHERE room_id = ANY(%s) AND stream_id > %s AND stream_id <= %s"
        " AND (receipt_type <> %s OR user_id = %s) ORDER BY stream_id",
        (list(room_ids), after, up_to, private_type, viewer),
    )
    return [ReceiptRow(*row) for row in await cur.fetchall()]
