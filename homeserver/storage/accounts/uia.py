"""User-interactive auth sessions: which stages a client completed, for which request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    expires_ts: int
    request_key: str
    user_id: str | None
    completed: list[str]
    data: dict[str, Any]


async def create_session(
    conn: AsyncConnection,
    session_id: str,
    request_key: str,
    user_id: str | None,
    now_ms: int,
    expires_ts: int,
) -> None:
    await conn.execute(
        "INSERT INTO uia_sessions (session_id, created_ts, expires_ts, request_key, user_id)"
        " VALUES (%s, %s, %s, %s, %s)",
        (session_id, now_ms, expires_ts, request_key, user_id),
    )


async def get_session(conn: AsyncConnection, session_id: str, now_ms: int) -> SessionRow | None:
    cur = await conn.execute(
        "SELECT session_id, expires_ts, request_key, user_id, completed, data FROM uia_sessions"
        " WHERE session_id = %s AND expires_ts > %s",
        (session_id, now_ms),
    )
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def complete_stage(
    conn: AsyncConnection, session_id: str, stage: str, data: dict[str, Any]
) -> list[str]:
    """Record a completed stage (and data it produced); the completed stages after it."""
    cur = await conn.execute(
        "UPDATE uia_sessions SET"
        " completed = CASE WHEN completed ? %s THEN completed ELSE completed || %s END,"
        " data = data || %s"
        " WHERE session_id = %s RETURNING completed",
        (stage, Jsonb([stage]), Jsonb(data), session_id),
    )
    row = await cur.fetchone()
    return list(row[0]) if row else []


async def take_session(conn: AsyncConnection, session_id: str) -> dict[str, Any] | None:
    """End a completed session, returning its data; None if it was already taken."""
    cur = await conn.execute(
        "DELETE FROM uia_sessions WHERE session_id = %s RETURNING data", (session_id,)
    )
    row = await cur.fetchone()
    return dict(row[0]) if row else None


async def delete_expired(conn: AsyncConnection, now_ms: int) -> list[dict[str, Any]]:
    """Drop abandoned sessions; their data, so that what they held can be released."""
    cur = await conn.execute(
        "DELETE FROM uia_sessions WHERE expires_ts <= %s RETURNING data", (now_ms,)
    )
    return [row[0] for row in await cur.fetchall()]
