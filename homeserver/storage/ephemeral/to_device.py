"""To-device messages waiting for their device, on the to_device stream, and the
transaction ids that make /sendToDevice idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class ToDeviceRow:
    user_id: str
    device_id: str
    stream_id: int
    sender: str
    type: str
    content: str  # JSON text, handed to the client as it came


async def txn_seen(conn: AsyncConnection, user_id: str, device_id: str, txn_id: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM to_device_txn_ids WHERE user_id = %s AND device_id = %s AND txn_id = %s",
        (user_id, device_id, txn_id),
    )
    return await cur.fetchone() is not None


async def claim_txn(
    conn: AsyncConnection, user_id: str, device_id: str, txn_id: str, now_ms: int
) -> bool:
    """Record a transaction id; False if it was already recorded."""
    cur = await conn.execute(
        "INSERT INTO to_device_txn_ids (user_id, device_id, txn_id, created_ts)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (user_id, device_id, txn_id, now_ms),
    )
    return cur.rowcount == 1


async def insert_messages(conn: AsyncConnection, rows: Sequence[ToDeviceRow]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO to_device_messages (user_id, device_id, stream_id, sender, type, content)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(r.user_id, r.device_id, r.stream_id, r.sender, r.type, r.content) for r in rows],
        )


async def messages_for(
    conn: AsyncConnection, user_id: str, device_id: str, after: int, up_to: int, limit: int
) -> list[ToDeviceRow]:
    cur = await conn.execute(
        "SELECT user_id, device_id, stream_id, sender, type, content FROM to_device_messages"
        " WHERE user_id = %s AND device_id = %s AND stream_id > %s AND stream_id <= %s"
        " ORDER BY stream_id LIMIT %s",
        (user_id, device_id, after, up_to, limit),
    )
    return [ToDeviceRow(*row) for row in await cur.fetchall()]


async def delete_up_to(conn: AsyncConnection, user_id: str, device_id: str, up_to: int) -> int:
    cur = await conn.execute(
        "DELETE FROM to_device_messages WHERE user_id = %s AND device_id = %s AND stream_id <= %s",
        (user_id, device_id, up_to),
    )
    return cur.rowcount


async def claim_inbound_message_id(
    conn: AsyncConnection, sender: str, message_id: str, now_ms: int
) -> bool:
    """Record an m.direct_to_device message id; False if it was delivered before."""
    cur = await conn.execute(
        "INSERT INTO inbound_to_device_ids (sender, message_id, received_ts)"
        " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (sender, message_id, now_ms),
    )
    return cur.rowcount == 1
