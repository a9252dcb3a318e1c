"""Room deletions that admins scheduled: their status for the admin API (whichever
process the poll reaches), their parameters for the process that runs them, and the
advisory lock that makes that process the only one, until it dies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# First key of the two-key advisory lock form: a namespace for room deletions.
_LOCK_NAMESPACE = 0x526D446C  # "RmDl"
UNFINISHED = ("scheduled", "active")


@dataclass(frozen=True, slots=True)
class DeletionRow:
    delete_id: str
    room_id: str
    admin_id: str
    request: dict[str, Any]
    status: str
    error: str | None
    kicked_users: list[str]
    failed_to_kick_users: list[str]
    local_aliases: list[str]
    timestamp_ms: int  # of the last change of status


_COLUMNS = (
    "delete_id, room_id, admin_id, request, status, error, kicked_users,"
    " failed_to_kick_users, local_aliases, COALESCE(finished_ts, created_ts)"
)


async def insert(
    conn: AsyncConnection,
    delete_id: str,
    room_id: str,
    admin_id: str,
    request: dict[str, Any],
    now_ms: int,
) -> bool:
    """Record a scheduled deletion; False when one of this room is already unfinished."""
    cur = await conn.execute(
        "INSERT INTO room_deletions (delete_id, room_id, admin_id, request, status,"
        " kicked_users, failed_to_kick_users, local_aliases, created_ts)"
        " VALUES (%s, %s, %s, %s, 'scheduled', '[]', '[]', '[]', %s)"
        " ON CONFLICT DO NOTHING RETURNING delete_id",
        (delete_id, room_id, admin_id, Jsonb(request), now_ms),
    )
    return await cur.fetchone() is not None


async def get(conn: AsyncConnection, delete_id: str) -> DeletionRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM room_deletions WHERE delete_id = %s", (delete_id,)
    )
    row = await cur.fetchone()
    return None if row is None else DeletionRow(*row)


async def of_room(conn: AsyncConnection, room_id: str) -> list[DeletionRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM room_deletions WHERE room_id = %s ORDER BY created_ts",
        (room_id,),
    )
    return [DeletionRow(*row) for row in await cur.fetchall()]


async def every(conn: AsyncConnection) -> list[DeletionRow]:
    """Every deletion still remembered (finished ones are forgotten after a while)."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM room_deletions ORDER BY created_ts")
    return [DeletionRow(*row) for row in await cur.fetchall()]


async def unfinished(conn: AsyncConnection) -> list[str]:
    cur = await conn.execute(
        "SELECT delete_id FROM room_deletions WHERE status = ANY(%s)", (list(UNFINISHED),)
    )
    return [row[0] for row in await cur.fetchall()]


async def update(
    conn: AsyncConnection,
    delete_id: str,
    status: str,
    error: str | None,
    kicked_users: list[str],
    failed_to_kick_users: list[str],
    local_aliases: list[str],
    finished_ts: int | None,
) -> None:
    await conn.execute(
        "UPDATE room_deletions SET status = %s, error = %s, kicked_users = %s,"
        " failed_to_kick_users = %s, local_aliases = %s, finished_ts = %s"
        " WHERE delete_id = %s",
        (
            status,
            error,
            Jsonb(kicked_users),
            Jsonb(failed_to_kick_users),
            Jsonb(local_aliases),
            finished_ts,
            delete_id,
        ),
    )


async def forget_finished(conn: AsyncConnection, before_ms: int) -> None:
    await conn.execute("DELETE FROM room_deletions WHERE finished_ts < %s", (before_ms,))


async def try_lock(conn: AsyncConnection, delete_id: str) -> bool:
    """Take the session-level lock on a deletion; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, delete_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, delete_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, delete_id))
