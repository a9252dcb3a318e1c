"""Reports of events, rooms and users that users send for server admins to review."""

from __future__ import annotations

from psycopg import AsyncConnection


async def insert_event_report(
    conn: AsyncConnection,
    *,
    room_id: str,
    event_id: str,
    user_id: str,
    reason: str | None,
    score: int | None,
    now_ms: int,
) -> None:
    await conn.execute(
        "INSERT INTO event_reports (room_id, event_id, user_id, reason, score, received_ts)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (room_id, event_id, user_id, reason, score, now_ms),
    )


async def insert_room_report(
    conn: AsyncConnection, *, room_id: str, user_id: str, reason: str, now_ms: int
) -> None:
    await conn.execute(
        "INSERT INTO room_reports (room_id, user_id, reason, received_ts) VALUES (%s, %s, %s, %s)",
        (room_id, user_id, reason, now_ms),
    )


async def insert_user_report(
    conn: AsyncConnection, *, target_user_id: str, user_id: str, reason: str, now_ms: int
) -> None:
    await conn.execute(
        "INSERT INTO user_reports (target_user_id, user_id, reason, received_ts)"
        " VALUES (%s, %s, %s, %s)",
        (target_user_id, user_id, reason, now_ms),
    )
