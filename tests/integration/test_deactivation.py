"""Deactivation leaves the user's rooms (joins left, invites rejected, knocks
withdrawn) after the account has closed, and a restart finishes leaves cut short."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.accounts import profiles
from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user, register_user

Client = TestClient[Any, Any]
URL = "https://push.example.org/_matrix/push/v1/notify"


async def member_events(bob: RoomUser, since: str) -> dict[str, list[tuple[str, str]]]:
    """(state_key, membership) of the member events bob's sync shows per room since `since`."""
    status, body = await bob.get("/v3/sync", since=since, timeout="0")
    assert status == 200, body
    out: dict[str, list[tuple[str, str]]] = {}
    for room_id, room in body.get("rooms", {}).get("join", {}).items():
        out[room_id] = [
            (e["state_key"], e["content"]["membership"])
            for e in room["timeline"]["events"]
            if e["type"] == "m.room.member"
        ]
    return out


async def membership_of(bob: RoomUser, room_id: str, user_id: str) -> str | None:
    status, body = await bob.get(f"/v3/rooms/{room_id}/members")
    assert status == 200, body
    found = [e["content"]["membership"] for e in body["chunk"] if e["state_key"] == user_id]
    return found[0] if found else None


async def rooms_for_alice(bob: RoomUser, alice: RoomUser) -> tuple[str, str, str]:
    """A room alice joined, one she is invited to, one she knocked on."""
    joined = await bob.create_room(preset="public_chat")
    await alice.join(joined)
    invited = await bob.create_room(preset="private_chat")
    await bob.invite(invited, alice.user_id)
    knocked = await bob.create_room(preset="private_chat")
    await bob.state(knocked, "m.room.join_rules", {"join_rule": "knock"})
    await alice.ok("POST", f"/knock/{knocked}", {})
    return joined, invited, knocked


async def test_self_deactivation_leaves_every_room(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(
        open_registration=True, **{"rate_limits.enabled": False}
    )
    registered = await register_user(client, "alice", "pw")
    alice = RoomUser(client, registered["user_id"], registered["access_token"])
    bob = await RoomUser.make(client, "bob")
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice A"})
    await alice.ok("PUT", f"/profile/{alice.user_id}/avatar_url", {"avatar_url": "mxc://x/y"})
    pusher = {
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": "token",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": URL},
    }
    await alice.ok("POST", "/pushers/set", pusher)
    joined, invited, knocked = await rooms_for_alice(bob, alice)
    _, body = await bob.get("/v3/sync", timeout="0")
    since = body["next_batch"]

    url = f"{CLIENT_V3}/account/deactivate"
    resp = await client.post(url, json={"erase": True}, headers=alice.headers)
    session = (await resp.json())["session"]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
        "session": session,
    }
    resp = await client.post(url, json={"erase": True, "auth": auth}, headers=alice.headers)
    assert resp.status == 200, await resp.text()
    hs = client.app[HOMESERVER]
    await hs.deactivation.idle()

    seen = await member_events(bob, since)
    for room_id in (joined, invited, knocked):
        assert seen[room_id] == [(alice.user_id, "leave")], room_id
        assert await membership_of(bob, room_id, alice.user_id) == "leave"
    status, body = await bob.get(f"/v3/rooms/{joined}/joined_members")
    assert status == 200 and alice.user_id not in body["joined"]

    async with hs.db.pool.connection() as conn:
        assert await profiles.get_profile(conn, alice.user_id) == (None, None)
        cur = await conn.execute(
            "SELECT count(*) FROM pushers WHERE user_id = %s", (alice.user_id,)
        )
        assert await cur.fetchone() == (0,)
    found = await bob.ok("POST", "/user_directory/search", {"search_term": "alice"})
    assert found["results"] == []
    # A deactivated account cannot be invited again.
    resp = await client.post(
        f"{CLIENT_V3}/rooms/{joined}/invite",
        json={"user_id": alice.user_id},
        headers=bob.headers,
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_admin_deactivation_without_erase_keeps_profile(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice A"})
    joined, invited, knocked = await rooms_for_alice(bob, alice)

    resp = await client.post(
        f"/_synapse/admin/v1/deactivate/{alice.user_id}", headers=auth_header(admin_token)
    )
    assert resp.status == 200, await resp.text()
    hs = client.app[HOMESERVER]
    await hs.deactivation.idle()
    for room_id in (joined, invited, knocked):
        assert await membership_of(bob, room_id, alice.user_id) == "leave"
    async with hs.db.pool.connection() as conn:
        assert await profiles.get_profile(conn, alice.user_id) == ("Alice A", None)


async def test_restart_finishes_the_leaves(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    joined, invited, knocked = await rooms_for_alice(bob, alice)
    hs = client.app[HOMESERVER]
    # The account closed, then the process stopped before any leave was sent.
    await hs.deactivation.close_account(alice.user_id, erase=False)
    for room_id in (joined, invited, knocked):
        assert await membership_of(bob, room_id, alice.user_id) != "leave"

    await hs.deactivation.start()  # what a restarted server does
    await hs.deactivation.idle()
    for room_id in (joined, invited, knocked):
        assert await membership_of(bob, room_id, alice.user_id) == "leave"
    # Running it again finds nothing to do.
    await hs.deactivation.start()
    await hs.deactivation.idle()
    _, body = await bob.get(f"/v3/rooms/{joined}/messages", dir="b", limit="50")
    leaves = [e for e in body["chunk"] if e.get("state_key") == alice.user_id]
    assert [e["content"]["membership"] for e in leaves] == ["leave", "join"]


async def test_reactivated_account_keeps_rooms_it_rejoins(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await bob.create_room(preset="public_chat")
    await alice.join(room_id)
    hs = client.app[HOMESERVER]
    await hs.deactivation.close_account(alice.user_id, erase=False)
    async with hs.db.pool.connection() as conn:
        await conn.execute(
            "UPDATE users SET deactivated = FALSE WHERE user_id = %s", (alice.user_id,)
        )
    await hs.deactivation.start()
    await hs.deactivation.idle()
    assert await membership_of(bob, room_id, alice.user_id) == "join"
