"""Queries federation needs over the room DAG: servers in a room, auth chains, walks
back along prev edges, and current-state rewrites when state resolution moves it."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import AsyncConnection

from homeserver.storage.rooms.state import StateKey


async def known_event_ids(conn: AsyncConnection, event_ids: Iterable[str]) -> set[str]:
    ids = list(event_ids)
    if not ids:
        return set()
    cur = await conn.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)", (ids,))
    return {row[0] for row in await cur.fetchall()}


async def auth_chain_ids(conn: AsyncConnection, event_ids: Iterable[str]) -> set[str]:
    """Every event reachable from `event_ids` along auth edges (not the ids themselves,
    unless one is in another's chain)."""
    ids = list(event_ids)
    if not ids:
        return set()
    cur = await conn.execute(
        """
        WITH RECURSIVE chain(event_id) AS (
            SELECT a FROM events, unnest(auth_event_ids) AS a WHERE event_id = ANY(%s)
            UNION
            SELECT a FROM events e JOIN chain c USING (event_id), unnest(e.auth_event_ids) AS a
        )
        SELECT event_id FROM chain
        """,
        (ids,),
    )
    return {row[0] for row in await cur.fetchall()}


async def prev_event_ids(conn: AsyncConnection, event_ids: Iterable[str]) -> dict[str, list[str]]:
    ids = list(event_ids)
    if not ids:
        return {}
    cur = await conn.execute(
        "SELECT event_id, prev_event_id FROM event_edges WHERE event_id = ANY(%s)", (ids,)
    )
    out: dict[str, list[str]] = {}
    for event_id, prev in await cur.fetchall():
        out.setdefault(event_id, []).append(prev)
    return out


async def delete_current_state(
    conn: AsyncConnection, room_id: str, keys: Iterable[StateKey]
) -> None:
    key_list = list(keys)
    if not key_list:
        return
    await conn.execute(
        "DELETE FROM current_state WHERE room_id = %s"
        " AND (type, state_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (room_id, [k[0] for k in key_list], [k[1] for k in key_list]),
    )


async def has_state(conn: AsyncConnection, room_id: str) -> bool:
    """Whether we hold the room's state (we joined it at some point), not merely an
    invite or a rejection of one."""
    cur = await conn.execute(
        "SELECT current_state_group IS NOT NULL FROM rooms WHERE room_id = %s", (room_id,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])
