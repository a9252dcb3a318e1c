"""Refusals over HTTP: a member without the power for an action, a user who is not a
server admin on the admin API. Each action is also shown to work for who may do it."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.admin.access import is_public
from tests.integration.conftest import RoomUser, auth_header, call, make_user

ADMIN = "/_synapse/admin"


async def test_member_without_power_cannot_set_state_invite_kick_or_redact(
    open_client: TestClient[Any, Any],
) -> None:
    """Bob (level 10) outranks Carol (0), but not the levels these actions need (50)."""
    alice = await RoomUser.make(open_client, "alice")
    bob = await RoomUser.make(open_client, "bob")
    carol = await RoomUser.make(open_client, "carol")
    dave = await RoomUser.make(open_client, "dave")
    room = await alice.create_room(
        power_level_content_override={"invite": 50, "users": {bob.user_id: 10}}, name="Kept"
    )
    for member in (bob, carol):
        await alice.invite(room, member.user_id)
        await member.join(room)
    message = await carol.say(room, "hers")
    r = f"/v3/rooms/{room}"
    for method, path, body in (
        ("PUT", f"{r}/state/m.room.name/", {"name": "Taken"}),
        ("POST", f"{r}/invite", {"user_id": dave.user_id}),
        ("POST", f"{r}/kick", {"user_id": carol.user_id}),
        ("PUT", f"{r}/redact/{message}/r1", {}),
    ):
        status, answer = await call(open_client, method, path, body, headers=bob.headers)
        assert status == 403 and answer["errcode"] == "M_FORBIDDEN", (path, answer)

    status, name = await alice.get(f"{r}/state/m.room.name/")
    assert name == {"name": "Kept"}
    status, _ = await alice.get(f"{r}/state/m.room.member/{dave.user_id}")
    assert status == 404
    status, member = await alice.get(f"{r}/state/m.room.member/{carol.user_id}")
    assert member["membership"] == "join"
    status, event = await alice.get(f"{r}/event/{message}")
    assert event["content"] == {"msgtype": "m.text", "body": "hers"}
    # Alice, with the power, may do each of them.
    await alice.state(room, "m.room.name", {"name": "Renamed"})
    await alice.invite(room, dave.user_id)
    await alice.redact(room, message)
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": carol.user_id})


async def test_admin_api_refuses_users_who_are_not_admins(
    open_client: TestClient[Any, Any],
) -> None:
    _, admin_token = await make_user(open_client, "root", admin=True)
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    requests = [
        ("PUT", f"{ADMIN}/v1/rooms/{room}/block", {"block": True}),
        ("POST", f"{ADMIN}/v1/registration_tokens/new", {"token": "abc"}),
        ("GET", f"{ADMIN}/v2/users/{alice.user_id}/devices/TESTDEVICE", None),
    ]
    for method, path, body in requests:
        resp = await open_client.request(method, path, json=body, headers=alice.headers)
        answer = await resp.json()
        assert resp.status == 403 and answer["errcode"] == "M_FORBIDDEN", (path, answer)
    admin = auth_header(admin_token)
    resp = await open_client.get(f"{ADMIN}/v1/rooms/{room}/block", headers=admin)
    assert (await resp.json())["block"] is False
    resp = await open_client.get(f"{ADMIN}/v1/registration_tokens/abc", headers=admin)
    assert resp.status == 404
    # The admin may do each of them.
    for method, path, body in requests:
        resp = await open_client.request(method, path, json=body, headers=admin)
        assert resp.status == 200, (path, await resp.text())


async def test_every_admin_route_refuses_users_who_are_not_admins(
    open_client: TestClient[Any, Any],
) -> None:
    """Walks the route table: no admin endpoint forgets its check."""
    alice = await RoomUser.make(open_client, "alice")
    checked, failures = 0, []
    for resource in open_client.app.router.resources():
        if not resource.canonical.startswith(ADMIN):
            continue
        values = {p: "x" for p in re.findall(r"\{(\w+)\}", resource.canonical)}
        url = resource.url_for(**values)  # type: ignore[attr-defined]
        for route in resource:
            # Public as in Synapse: shared-secret registration (the HMAC is the
            # credential) and the version.
            if route.method in ("HEAD", "*") or is_public(route.handler):
                continue
            resp = await open_client.request(route.method, url, json={}, headers=alice.headers)
            answer = await resp.json()
            checked += 1
            if resp.status != 403 or answer.get("errcode") != "M_FORBIDDEN":
                failures.append((route.method, resource.canonical, resp.status))
    assert checked >= 20
    assert failures == []
