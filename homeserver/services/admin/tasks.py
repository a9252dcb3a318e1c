"""Admin tasks that run in the background while admin tools poll their status: history
purges and redactions of all of a user's events (room deletions keep their own table,
`services/admin/rooms.py`, and run the same way).

A task is a row, so a poll reaching any process of a cluster reads how it stands. It
runs under an advisory lock on a connection of the process running it (the delivery
engine of services/core/delivery.py): when that process dies, the lock goes with its
connection, and another process's sweep takes the unfinished task up within seconds and
runs it again with the progress it recorded (as Synapse resumes its scheduled tasks).
Actions must therefore be safe to run again: a purge before a point is, and redactions
skip what is already redacted.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.errors import ServiceError
from homeserver.services.core.stored_json import ensure_storable
from homeserver.storage.admin import tasks as store
from homeserver.storage.admin.tasks import TaskRow
from homeserver.storage.core.pool import Database

log = logging.getLogger(__name__)

# Runs a task (again, with the result it saved, if its process died): the final result.
Action = Callable[[TaskRow], Awaitable[dict[str, Any] | None]]
STATUS_TTL_MS = 24 * 3600 * 1000
SWEEP_INTERVAL_S = 5.0
RETRY_MS = 60_000


def render_task(row: TaskRow) -> dict[str, Any]:
    """One task in the shape of Synapse's scheduled-task list."""
    return {
        "id": row.task_id,
        "action": row.action,
        "status": row.status,
        "timestamp_ms": row.timestamp_ms,
        "resource_id": row.resource_id,
        "result": row.result,
        "error": row.error,
    }


class AdminTasks:
    """Schedules admin tasks and runs them, one process at a time each, to an end."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._actions: dict[str, Action] = {}
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock=store.try_lock,
            unlock=store.unlock,
            label=lambda task_id: f"admin task {task_id}",
            failure_retry_ms=RETRY_MS,
            pending=self._unfinished,
            sweep_interval_s=SWEEP_INTERVAL_S,
            name="admin tasks",
        )

    def register(self, action: str, run: Action) -> None:
        """Every process registers every action, so any of them can take a task up."""
        self._actions[action] = run

    def start(self) -> None:
        """Look for tasks left unfinished by a process that died, now and then."""
        self._workers.start()

    async def sweep(self) -> None:
        """Take up unfinished tasks nobody runs, now."""
        await self._workers.sweep()

    async def schedule(
        self, action: str, resource_id: str, params: dict[str, Any], busy: str = ""
    ) -> str:
        """Record a task and start it here; its id. `busy` is the answer when the action
        allows one unfinished task per resource and there is one (redactions of a
        user's events, as Synapse refuses a second; purges of one room queue)."""
        ensure_storable(params, "Request")
        task_id = secrets.token_urlsafe(12)
        now = now_ms()
        async with self.db.pool.connection() as conn:
            await store.forget_finished(conn, now - STATUS_TTL_MS)
            if not await store.insert(conn, task_id, action, resource_id, params, now):
                raise ServiceError(400, "M_UNKNOWN", busy)
        self._workers.wake(task_id)
        return task_id

    async def get(self, task_id: str, action: str) -> TaskRow | None:
        async with self.db.pool.connection() as conn:
            row = await store.get(conn, task_id)
        return row if row is not None and row.action == action else None

    async def save_result(self, task_id: str, result: dict[str, Any]) -> None:
        """Record a running task's progress, which it carries on with if taken up again."""
        async with self.db.pool.connection() as conn:
            await store.save_result(conn, task_id, result, now_ms())

    async def listing(self) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            return [render_task(row) for row in await store.every(conn)]

    async def idle(self) -> None:
        """Wait until no task runs in this process."""
        await self._workers.idle()

    async def close(self) -> None:
        await self._workers.close()

    async def _unfinished(self) -> list[tuple[str, int | None]]:
        async with self.db.pool.connection() as conn:
            return [(task_id, None) for task_id in await store.unfinished(conn)]

    async def _drain(self, task_id: str) -> int | None:
        """Run a scheduled task (or one whose process died), recording how it ended."""
        async with self.db.pool.connection() as conn:
            row = await store.get(conn, task_id)
            if row is None or row.status not in store.UNFINISHED:
                return None
            await store.set_status(conn, task_id, "active", None, None, now_ms())
        run = self._actions.get(row.action)
        status, result = "failed", None
        error: str | None = f"Unknown task action {row.action}"
        if run is not None:
            try:
                result = await run(row)
            except Exception as exc:  # any failure is reported to the polling admin
                log.exception("admin task %s (%s) failed", task_id, row.action)
                error = str(exc) or type(exc).__name__
            else:
                status, error = "complete", None
        async with self.db.pool.connection() as conn:
            await store.set_status(conn, task_id, status, result, error, now_ms())
        return None
