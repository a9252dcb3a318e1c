"""Admins acting in rooms: joining a user to a room, making a user room admin, forward
extremities, the per-room database statistics and the task lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


async def test_join_make_room_admin_and_extremities(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    admin_id, admin_token = await make_user(client, "root", admin=True)
    owner = await RoomUser.make(client, "owner")
    carol = await RoomUser.make(client, "carol")
    room_id = await owner.create_room(preset="private_chat")
    await owner.say(room_id, "hi")

    # A private room the admin is not in: refused; then carol joins a public one.
    status, body = await admin_call(
        client, "POST", f"{V1}/join/{room_id}", admin_token, {"user_id": carol.user_id}
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    public = await owner.create_room(preset="public_chat")
    status, body = await admin_call(
        client, "POST", f"{V1}/join/{public}", admin_token, {"user_id": carol.user_id}
    )
    assert (status, body) == (200, {"room_id": public})
    assert carol.user_id in (await owner.ok("GET", f"/rooms/{public}/joined_members"))["joined"]

    # The admin becomes room admin of the private room through its owner.
    status, _ = await admin_call(
        client, "POST", f"{V1}/rooms/{room_id}/make_room_admin", admin_token, {}
    )
    assert status == 200, _
    levels = await owner.ok("GET", f"/rooms/{room_id}/state/m.room.power_levels/")
    # As high as anyone (the owner, a v12 creator, is above the table).
    assert levels["users"][admin_id] == max(levels["users"].values()) >= 100
    # Now in the room, the admin can bring carol in.
    status, _ = await admin_call(
        client, "POST", f"{V1}/join/{room_id}", admin_token, {"user_id": carol.user_id}
    )
    assert status == 200

    status, ext = await admin_call(
        client, "GET", f"{V1}/rooms/{room_id}/forward_extremities", admin_token
    )
    assert status == 200 and ext["count"] == len(ext["results"]) >= 1
    assert set(ext["results"][0]) == {"event_id", "state_group", "depth", "received_ts"}
    status, deleted = await admin_call(
        client, "DELETE", f"{V1}/rooms/{room_id}/forward_extremities", admin_token
    )
    assert deleted == {"deleted": ext["count"] - 1}

    status, stats = await admin_call(client, "GET", f"{V1}/statistics/database/rooms", admin_token)
    sizes = {r["room_id"]: r["estimated_size"] for r in stats["rooms"]}
    assert sizes[room_id] > 0 and sizes[public] > 0

    status, tasks = await admin_call(client, "GET", f"{V1}/scheduled_tasks", admin_token)
    assert (status, tasks) == (200, {"scheduled_tasks": []})
    status, _ = await admin_call(
        client, "DELETE", f"/_synapse/admin/v2/rooms/{public}", admin_token, {}
    )
    status, tasks = await admin_call(
        client, "GET", f"{V1}/scheduled_tasks", admin_token, params={"resource_id": public}
    )
    assert [t["resource_id"] for t in tasks["scheduled_tasks"]] == [public]
    status, updates = await admin_call(
        client, "GET", f"{V1}/background_updates/status", admin_token
    )
    assert updates == {"enabled": True, "current_updates": {}}
