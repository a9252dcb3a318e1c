"""Server notices: the admin API's send_server_notice puts a message in the user's own
notices room, from the account Synapse's `server_notices` block names; the room is
reused, tagged m.server_notice, and only the server speaks in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
PATH = "/_synapse/admin/v1/send_server_notice"


async def test_notice_reaches_the_user_in_their_notices_room(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(
        server_notices={"system_mxid_localpart": "staff", "system_mxid_display_name": "Staff",
                        "system_mxid_avatar_url": "mxc://test.local/staffpic",
                        "room_name": "From the staff"},
        **{"rate_limits.enabled": False},
    )  # fmt: skip
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    notice = {"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "maintenance"}}
    status, body = await admin_call(client, "POST", PATH, admin_token, notice)
    assert status == 200 and body["event_id"].startswith("$"), body

    status, sync = await alice.get("/v3/sync")
    invites = sync["rooms"]["invite"]
    assert len(invites) == 1
    room_id = next(iter(invites))
    await alice.join(room_id)
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="20")
    messages = [e for e in page["chunk"] if e["type"] == "m.room.message"]
    assert [(m["sender"], m["content"]["body"]) for m in messages] == [
        ("@staff:test.local", "maintenance")
    ]
    status, name = await alice.get(f"/v3/rooms/{room_id}/state/m.room.name/")
    assert name == {"name": "From the staff"}
    status, tags = await alice.get(f"/v3/user/{alice.user_id}/rooms/{room_id}/tags")
    assert "m.server_notice" in tags["tags"]
    status, profile = await alice.get("/v3/profile/@staff:test.local")
    assert profile == {"displayname": "Staff", "avatar_url": "mxc://test.local/staffpic"}
    # The user reads but cannot answer.
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/r1",
        json={"msgtype": "m.text", "body": "why?"},
        headers=alice.headers,
    )
    assert resp.status == 403

    # The next notice goes to the same room; the PUT form is idempotent by txn id.
    second = {**notice, "content": {"msgtype": "m.text", "body": "done"}}
    status, first_put = await admin_call(client, "PUT", f"{PATH}/t1", admin_token, second)
    status, again = await admin_call(client, "PUT", f"{PATH}/t1", admin_token, second)
    assert first_put == again
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="20")
    bodies = [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["done", "maintenance"]

    status, body = await admin_call(
        client, "POST", PATH, admin_token, {**notice, "user_id": "@nobody:test.local"}
    )
    assert status == 404
