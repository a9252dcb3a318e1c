"""The advisory lock that lets one process at a time send a deactivated user's leaves
(the work itself is found from memberships: storage/rooms/memberships.py)."""

from __future__ import annotations

from psycopg import AsyncConnection

# First key of the two-key advisory lock form: a namespace for deactivation leaves.
_LOCK_NAMESPACE = 0x44656163  # "Deac"


async def try_lock(conn: AsyncConnection, user_id: str) -> bool:
    """Take the session-level lock on a user's leaves; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, user_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, user_id))
