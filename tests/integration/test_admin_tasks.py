"""Admin tasks (history purges, redactions of a user's events) are rows: started through
one process, their status is read through another on the same database, they show in
the scheduled-task list, and one whose process died is taken up by another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.core.clock import now_ms
from homeserver.storage.admin import tasks as task_store
from homeserver.storage.core.pool import Database
from tests.integration.conftest import RoomUser, make_user, serve_process, start_process
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


@pytest.fixture
async def two_apps(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[tuple[Client, Client]]:
    """Two processes of one server on one database (the same signing key)."""
    conninfo = database_factory()
    running: list[tuple[Client, Database]] = []
    for _ in range(2):
        hs, db = await start_process(tmp_path / "hs", conninfo)
        client = await serve_process(hs)
        running.append((client, db))
    yield running[0][0], running[1][0]
    for client, db in running:
        await client.close()
        await client.app[HOMESERVER].close()
        await db.close()


async def poll(client: Client, token: str, path: str) -> dict[str, Any]:
    """The status at `path` once it is no longer scheduled or active."""
    for _ in range(200):
        status, state = await admin_call(client, "GET", path, token)
        assert status == 200, state
        if state["status"] not in ("scheduled", "active"):
            return dict(state)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} still unfinished")


async def test_status_is_read_through_another_process(two_apps: tuple[Client, Client]) -> None:
    first, second = two_apps
    _, admin_token = await make_user(first, "root", admin=True)
    alice = await RoomUser.make(first, "alice")
    mallory = await RoomUser.make(first, "mallory")
    room_id = await alice.create_room(preset="public_chat")
    await mallory.join(room_id)
    old = [await alice.say(room_id, f"old {n}") for n in range(3)]
    spam = [await mallory.say(room_id, f"spam {n}") for n in range(2)]

    status, started = await admin_call(
        first,
        "POST",
        f"{V1}/purge_history/{room_id}",
        admin_token,
        {"delete_local_events": True, "purge_up_to_event_id": spam[0]},
    )
    assert status == 200
    purge_id = started["purge_id"]
    assert await poll(second, admin_token, f"{V1}/purge_history_status/{purge_id}") == {
        "status": "complete"
    }
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    kept = {e["event_id"] for e in page["chunk"]}
    assert not kept & set(old) and set(spam) <= kept

    status, started = await admin_call(
        first, "POST", f"{V1}/user/{mallory.user_id}/redact", admin_token, {"rooms": []}
    )
    assert status == 200
    redact_id = started["redact_id"]
    assert await poll(second, admin_token, f"{V1}/user/redact_status/{redact_id}") == {
        "status": "complete",
        "failed_redactions": {},
    }
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    redacted = {e["event_id"]: e["content"] for e in page["chunk"] if e["event_id"] in spam}
    assert redacted == {event_id: {} for event_id in spam}

    # Each id answers only for its own kind of task, wherever it is asked.
    for client in (first, second):
        status, body = await admin_call(
            client, "GET", f"{V1}/purge_history_status/{redact_id}", admin_token
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await admin_call(
            client, "GET", f"{V1}/user/redact_status/{purge_id}", admin_token
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")

    status, listed = await admin_call(second, "GET", f"{V1}/scheduled_tasks", admin_token)
    assert status == 200
    tasks = {t["id"]: t for t in listed["scheduled_tasks"]}
    assert tasks[purge_id]["action"] == "purge_history"
    assert tasks[purge_id]["resource_id"] == room_id
    assert tasks[redact_id]["action"] == "redact_all_events"
    assert tasks[redact_id]["resource_id"] == mallory.user_id
    assert tasks[redact_id]["result"] == {"failed_redactions": {}}
    assert {t["status"] for t in tasks.values()} == {"complete"}
    status, listed = await admin_call(
        second,
        "GET",
        f"{V1}/scheduled_tasks",
        admin_token,
        params={"action_name": "redact_all_events", "job_status": "complete"},
    )
    assert [t["id"] for t in listed["scheduled_tasks"]] == [redact_id]
    status, listed = await admin_call(
        second, "GET", f"{V1}/scheduled_tasks", admin_token, params={"max_timestamp": "1"}
    )
    assert listed == {"scheduled_tasks": []}
    status, body = await admin_call(
        second, "GET", f"{V1}/scheduled_tasks", admin_token, params={"max_timestamp": "x"}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_tasks_whose_process_died_are_taken_up(two_apps: tuple[Client, Client]) -> None:
    first, second = two_apps
    _, admin_token = await make_user(first, "root", admin=True)
    alice = await RoomUser.make(first, "alice")
    mallory = await RoomUser.make(first, "mallory")
    room_id = await alice.create_room(preset="public_chat")
    await mallory.join(room_id)
    old = [await alice.say(room_id, f"old {n}") for n in range(3)]
    spam = await mallory.say(room_id, "spam")
    last = await alice.say(room_id, "last")
    hs = first.app[HOMESERVER]
    # A process in the middle of two tasks: their rows, active with the progress it
    # recorded, and their locks held on its connection.
    process = await psycopg.AsyncConnection.connect(hs.db.conninfo, autocommit=True)
    cur = await process.execute("SELECT stream_ordering FROM events WHERE event_id = %s", (spam,))
    row = await cur.fetchone()
    assert row is not None
    params = {"before": row[0], "delete_local_events": True}
    redact = {"rooms": [room_id], "reason": None, "limit": 10}
    failed = {"failed_redactions": {"$earlier": "failed before the crash"}}
    for task_id, action, resource, task_params, result in (
        ("dead1", "purge_history", room_id, params, None),
        ("dead2", "redact_all_events", mallory.user_id, redact, failed),
    ):
        assert await task_store.insert(process, task_id, action, resource, task_params, now_ms())
        await task_store.set_status(process, task_id, "active", result, None, now_ms())
        assert await task_store.try_lock(process, task_id)

    # Under way, as far as any process knows: a second redaction of the user is refused
    # (as Synapse does); a second purge of the room is accepted (purges of one room
    # take turns).
    status, state = await admin_call(first, "GET", f"{V1}/purge_history_status/dead1", admin_token)
    assert state == {"status": "active"}
    status, state = await admin_call(first, "GET", f"{V1}/user/redact_status/dead2", admin_token)
    assert state == {"status": "active"}
    status, body = await admin_call(
        second, "POST", f"{V1}/user/{mallory.user_id}/redact", admin_token, {"rooms": []}
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")
    assert "already in progress" in body["error"]
    status, started = await admin_call(
        second, "POST", f"{V1}/purge_history/{room_id}/{last}", admin_token, {}
    )
    assert status == 200 and started["purge_id"] != "dead1"
    # Nobody else takes them up while their process lives.
    await second.app[HOMESERVER].admin_tasks.sweep()
    for path in ("purge_history_status/dead1", "user/redact_status/dead2"):
        status, state = await admin_call(first, "GET", f"{V1}/{path}", admin_token)
        assert state == {"status": "active"}

    # It dies: its connection, and so its locks, are gone.
    await process.close()
    await second.app[HOMESERVER].admin_tasks.sweep()
    for purge_id in ("dead1", started["purge_id"]):
        assert await poll(first, admin_token, f"{V1}/purge_history_status/{purge_id}") == {
            "status": "complete"
        }
    assert await poll(first, admin_token, f"{V1}/user/redact_status/dead2") == {
        "status": "complete",
        "failed_redactions": failed["failed_redactions"],
    }
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    kept = {e["event_id"]: e["content"] for e in page["chunk"]}
    assert last in kept and not kept.keys() & set(old)
    assert kept[spam] == {}
