"""Reports reach the admins: events and users reported through the client API are
listed, read and closed through Synapse's admin paths (Ketesa's report pages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


async def test_event_and_user_reports_round_trip(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat", name="Town square")
    await bob.join(room_id)
    bad = await bob.say(room_id, "offensive")
    await alice.ok("POST", f"/rooms/{room_id}/report/{bad}", {"reason": "rude", "score": -100})
    await alice.ok("POST", f"/users/{bob.user_id}/report", {"reason": "spammer"})
    resp = await client.post(
        f"{CLIENT_V3}/users/@nobody:test.local/report", json={"reason": "x"}, headers=alice.headers
    )
    assert resp.status == 404

    status, listing = await admin_call(client, "GET", f"{V1}/event_reports", admin_token)
    assert status == 200 and listing["total"] == 1
    report = listing["event_reports"][0]
    assert report["event_id"] == bad and report["sender"] == bob.user_id
    assert report["user_id"] == alice.user_id and report["reason"] == "rude"
    assert report["name"] == "Town square" and isinstance(report["received_ts"], int)
    status, listing = await admin_call(
        client, "GET", f"{V1}/event_reports", admin_token, params={"user_id": bob.user_id}
    )
    assert listing["total"] == 0
    status, detail = await admin_call(
        client, "GET", f"{V1}/event_reports/{report['id']}", admin_token
    )
    assert detail["event_json"]["content"]["body"] == "offensive"
    status, _ = await admin_call(
        client, "DELETE", f"{V1}/event_reports/{report['id']}", admin_token
    )
    assert status == 200
    status, _ = await admin_call(client, "GET", f"{V1}/event_reports/{report['id']}", admin_token)
    assert status == 404

    status, listing = await admin_call(client, "GET", f"{V1}/user_reports", admin_token)
    assert listing["total"] == 1
    user_report = listing["user_reports"][0]
    assert user_report["target_user_id"] == bob.user_id and user_report["reason"] == "spammer"
    status, _ = await admin_call(
        client, "DELETE", f"{V1}/user_reports/{user_report['id']}", admin_token
    )
    status, listing = await admin_call(client, "GET", f"{V1}/user_reports", admin_token)
    assert listing["total"] == 0
    status, body = await admin_call(client, "GET", f"{V1}/event_reports/abc", admin_token)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    resp = await client.get(f"{V1}/server_version")
    assert resp.status == 200
    assert isinstance((await resp.json())["server_version"], str)
