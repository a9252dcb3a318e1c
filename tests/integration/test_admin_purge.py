"""purge_history: history before a point is gone from the database (our users' events
only when asked), the room's state stays, and the purge is polled by its id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


async def purge(client: Client, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, started = await admin_call(client, "POST", path, token, body)
    assert status == 200, started
    for _ in range(100):
        status, state = await admin_call(
            client, "GET", f"{V1}/purge_history_status/{started['purge_id']}", token
        )
        if state["status"] != "active":
            return dict(state)
        await asyncio.sleep(0.05)
    raise AssertionError("purge still active")


async def test_purged_history_is_gone_from_the_database(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(name="Old talk")
    ids = [await alice.say(room_id, f"m{n}") for n in range(5)]
    hs = client.server.app[HOMESERVER]

    async def stored(event_ids: list[str]) -> set[str]:
        async with hs.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT event_id FROM events WHERE event_id = ANY(%s)", (event_ids,)
            )
            return {row[0] for row in await cur.fetchall()}

    # Our users' events stay unless asked for.
    state = await purge(client, admin_token, f"{V1}/purge_history/{room_id}/{ids[3]}", {})
    assert state == {"status": "complete"}
    assert await stored(ids) == set(ids)

    state = await purge(
        client,
        admin_token,
        f"{V1}/purge_history/{room_id}",
        {"delete_local_events": True, "purge_up_to_event_id": ids[3]},
    )
    assert state == {"status": "complete"}
    assert await stored(ids) == set(ids[3:])
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    bodies = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["m4", "m3"]
    status, name = await alice.get(f"/v3/rooms/{room_id}/state/m.room.name/")
    assert name == {"name": "Old talk"}
    # The room goes on.
    await alice.say(room_id, "after")

    status, body = await admin_call(client, "GET", f"{V1}/purge_history_status/nope", admin_token)
    assert status == 404
    status, body = await admin_call(
        client, "POST", f"{V1}/purge_history/{room_id}", admin_token, {}
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    # Nothing lies before the point: 404, as Synapse answers.
    status, body = await admin_call(
        client, "POST", f"{V1}/purge_history/{room_id}", admin_token, {"purge_up_to_ts": 1}
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
