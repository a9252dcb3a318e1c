"""Stripped state of rooms our users were invited to, or knocked on, over federation:
we hold no state of those rooms, so this is what their sync shows of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from psycopg import AsyncConnection


async def put(
    conn: AsyncConnection, room_id: str, user_id: str, event_id: str, state: list[Any]
) -> None:
    await conn.execute(
        "INSERT INTO invite_stripped_state (room_id, user_id, event_id, state)"
        " VALUES (%s, %s, %s, %s::jsonb)"
        " ON CONFLICT (room_id, user_id)"
        " DO UPDATE SET event_id = EXCLUDED.event_id, state = EXCLUDED.state",
        (room_id, user_id, event_id, orjson.dumps(state).decode()),
    )


async def for_events(conn: AsyncConnection, event_ids: Iterable[str]) -> dict[str, list[Any]]:
    """The stripped state stored with each of these membership events."""
    ids = list(event_ids)
    if not ids:
        return {}
    cur = await conn.execute(
        "SELECT event_id, state FROM invite_stripped_state WHERE event_id = ANY(%s)", (ids,)
    )
    return {event_id: state for event_id, state in await cur.fetchall()}
