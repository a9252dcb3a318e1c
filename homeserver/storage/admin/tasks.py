"""Admin tasks run in the background (history purges, redactions of a user's events):
their status for the admin API whichever process the poll reaches, their parameters
and progress for the process that runs them, and the advisory lock that makes that
process the only one, until it dies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# First key of the two-key advisory lock form: a namespace for admin tasks.
_LOCK_NAMESPACE = 0x41645473  # "AdTs"
UNFINISHED = ("scheduled", "active")


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    action: str
    resource_id: str
    params: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    error: str | None
    timestamp_ms: int  # of the last change


_COLUMNS = "task_id, action, resource_id, params, status, result, error, updated_ts"


async def insert(
    conn: AsyncConnection,
    task_id: str,
    action: str,
    resource_id: str,
    params: dict[str, Any],
    now_ms: int,
) -> bool:
    """Record a scheduled task; False when one of this resource is unfinished and the
    action allows only one (the unique index admin_tasks_exclusive: redactions)."""
    cur = await conn.execute(
        "INSERT INTO admin_tasks (task_id, action, resource_id, params, status,"
        " created_ts, updated_ts) VALUES (%s, %s, %s, %s, 'scheduled', %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING task_id",
        (task_id, action, resource_id, Jsonb(params), now_ms, now_ms),
    )
    return await cur.fetchone() is not None


async def get(conn: AsyncConnection, task_id: str) -> TaskRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM admin_tasks WHERE task_id = %s", (task_id,))
    row = await cur.fetchone()
    return None if row is None else TaskRow(*row)


async def every(conn: AsyncConnection) -> list[TaskRow]:
    """Every task still remembered (finished ones are forgotten after a while)."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM admin_tasks ORDER BY created_ts")
    return [TaskRow(*row) for row in await cur.fetchall()]


async def unfinished(conn: AsyncConnection) -> list[str]:
    cur = await conn.execute(
        "SELECT task_id FROM admin_tasks WHERE status = ANY(%s)", (list(UNFINISHED),)
    )
    return [row[0] for row in await cur.fetchall()]


async def set_status(
    conn: AsyncConnection,
    task_id: str,
    status: str,
    result: dict[str, Any] | None,
    error: str | None,
    now_ms: int,
) -> None:
    """A new status; `result` None keeps the progress saved so far."""
    finished = None if status in UNFINISHED else now_ms
    await conn.execute(
        "UPDATE admin_tasks SET status = %s, result = COALESCE(%s, result), error = %s,"
        " updated_ts = %s,"
        " finished_ts = %s WHERE task_id = %s",
        (status, None if result is None else Jsonb(result), error, now_ms, finished, task_id),
    )


async def save_result(
    conn: AsyncConnection, task_id: str, result: dict[str, Any], now_ms: int
) -> None:
    """Progress of a running task."""
    await conn.execute(
        "UPDATE admin_tasks SET result = %s, updated_ts = %s WHERE task_id = %s",
        (Jsonb(result), now_ms, task_id),
    )


async def forget_finished(conn: AsyncConnection, before_ms: int) -> None:
    await conn.execute("DELETE FROM admin_tasks WHERE finished_ts < %s", (before_ms,))


async def try_lock(conn: AsyncConnection, task_id: str) -> bool:
    """Take the session-level lock on a task; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, task_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, task_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, task_id))
