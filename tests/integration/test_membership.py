"""Membership as clients built against other servers expect it: restricted joins vouched
for by a local member, idempotent joins, and the content a client puts on its join."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import CLIENT_V3, RoomUser
from tests.integration.peers import PEER_CONFIG, free_port

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def peer(homeserver_client: Callable[..., Any]) -> Client:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    return client


def restricted_to(room_id: str, join_rule: str = "restricted") -> dict[str, Any]:
    """Join rules letting in the members of `room_id`, for createRoom's initial_state."""
    allow = [{"type": "m.room_membership", "room_id": room_id}]
    return {"type": "m.room.join_rules", "content": {"join_rule": join_rule, "allow": allow}}


async def member_event(user: RoomUser, room_id: str, target: str) -> dict[str, Any]:
    status, state = await user.get(f"/v3/rooms/{room_id}/state")
    assert status == 200, state
    [event] = [e for e in state if e["type"] == "m.room.member" and e["state_key"] == target]
    return dict(event)


@pytest.mark.parametrize(
    ("version", "join_rule"),
    [("8", "restricted"), ("10", "knock_restricted"), ("12", "restricted")],
)
async def test_restricted_join_is_vouched_for_by_a_local_member_who_may_invite(
    client: Client, version: str, join_rule: str
) -> None:
    alice = await RoomUser.make(client, "alice")
    aaron = await RoomUser.make(client, "aaron")  # joined, sorts first, but may not invite
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    space = await alice.create_room(preset="public_chat")
    await bob.join(space)
    await aaron.join(space)
    room = await alice.create_room(
        room_version=version,
        preset="public_chat",
        initial_state=[restricted_to(space, join_rule)],
        power_level_content_override={"invite": 50},
    )
    await aaron.join(room)
    assert (await member_event(alice, room, aaron.user_id))["content"][
        "join_authorised_via_users_server"
    ] == alice.user_id

    await bob.join(room)
    event = await member_event(alice, room, bob.user_id)
    assert event["content"]["membership"] == "join"
    assert event["content"]["join_authorised_via_users_server"] == alice.user_id

    # Carol is in no allowed room: refused, with a reason a client can show.
    resp = await carol.client.post(f"{CLIENT_V3}/rooms/{room}/join", json={}, headers=carol.headers)
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"


async def test_remote_restricted_join_is_vouched_for_by_a_member_who_may_invite(
    homeserver_client: Callable[..., Any],
) -> None:
    a = await peer(homeserver_client)
    b = await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    aaron = await RoomUser.make(a, "aaron")
    bob = await RoomUser.make(b, "bob")
    server_a = a.app[HOMESERVER].server_name
    space = await alice.create_room(preset="public_chat")
    room = await alice.create_room(
        room_version="10",
        preset="public_chat",
        initial_state=[restricted_to(space)],
        power_level_content_override={"invite": 50},
    )
    await aaron.join(space)
    await aaron.join(room)
    await bob.ok("POST", f"/join/{space}?server_name={server_a}")
    await bob.ok("POST", f"/join/{room}?server_name={server_a}")
    event = await member_event(alice, room, bob.user_id)
    assert event["content"]["join_authorised_via_users_server"] == alice.user_id


async def timeline_since(user: RoomUser, room_id: str, since: str) -> list[dict[str, Any]]:
    status, body = await user.get("/v3/sync", since=since, timeout="0")
    assert status == 200, body
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return list(room.get("timeline", {}).get("events", []))


async def test_repeating_current_state_or_a_join_sends_nothing_new(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    topic = await alice.state(room, "m.room.topic", {"topic": "Tea"})
    joined = (await member_event(alice, room, bob.user_id))["event_id"]
    own = await member_event(bob, room, bob.user_id)
    _, synced = await bob.get("/v3/sync", timeout="0")

    assert await alice.state(room, "m.room.topic", {"topic": "Tea"}) == topic
    await bob.join(room)
    await bob.ok("POST", f"/join/{room}", {})
    assert await bob.state(room, "m.room.member", own["content"], bob.user_id) == joined
    assert (await member_event(alice, room, bob.user_id))["event_id"] == joined
    assert await timeline_since(bob, room, synced["next_batch"]) == []

    # A different content, or another sender, is a change.
    assert await alice.state(room, "m.room.topic", {"topic": "Coffee"}) != topic


@pytest.mark.parametrize("endpoint", ["/rooms/{room}/join", "/join/{room}", "/join/{alias}"])
async def test_join_keeps_the_clients_content(client: Client, endpoint: str) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat", room_alias_name="hall")
    path = endpoint.format(room=room, alias="%23hall:test.local")
    body = {
        "reason": "saying hi",
        "displayname": "Bob in the hall",
        "org.example.badge": {"colour": "green"},
        "membership": "leave",
    }
    await bob.ok("POST", path, body)
    content = (await member_event(alice, room, bob.user_id))["content"]
    assert content == {
        "membership": "join",
        "reason": "saying hi",
        "displayname": "Bob in the hall",
        "org.example.badge": {"colour": "green"},
    }


async def test_join_cannot_name_its_own_authorising_user(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    space = await alice.create_room(preset="private_chat")
    room = await alice.create_room(room_version="10", initial_state=[restricted_to(space)])
    resp = await bob.client.post(
        f"{CLIENT_V3}/rooms/{room}/join",
        json={"join_authorised_via_users_server": alice.user_id},
        headers=bob.headers,
    )
    assert resp.status == 403
    status, _ = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert status == 404


async def test_members_at_a_sync_token_are_the_membership_then(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    await alice.say(room, "before")
    one = '{"room": {"timeline": {"limit": 1}}}'
    _, synced = await alice.get("/v3/sync", timeout="0", filter=one)
    await carol.join(room)
    await bob.leave(room)
    await alice.say(room, "after")

    def memberships(chunk: list[dict[str, Any]]) -> dict[str, str]:
        return {e["state_key"]: e["content"]["membership"] for e in chunk}

    for token in (synced["next_batch"], synced["rooms"]["join"][room]["timeline"]["prev_batch"]):
        status, body = await alice.get(f"/v3/rooms/{room}/members", at=token)
        assert status == 200, body
        assert memberships(body["chunk"]) == {alice.user_id: "join", bob.user_id: "join"}
    status, body = await alice.get(f"/v3/rooms/{room}/members")
    assert memberships(body["chunk"]) == {
        alice.user_id: "join",
        bob.user_id: "leave",
        carol.user_id: "join",
    }


async def test_members_before_a_join_over_federation(homeserver_client: Callable[..., Any]) -> None:
    """A room joined over federation starts here at our join: the sync's prev_batch is
    the point just before it, where the room's members were those we joined."""
    a = await peer(homeserver_client)
    b = await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room = await alice.create_room(preset="public_chat")
    await alice.say(room, "before bob")
    await bob.ok("POST", f"/join/{room}?server_name={a.app[HOMESERVER].server_name}")
    _, synced = await bob.get("/v3/sync", timeout="0")
    timeline = synced["rooms"]["join"][room]["timeline"]
    assert [e["type"] for e in timeline["events"]] == ["m.room.member"]
    status, body = await bob.get(f"/v3/rooms/{room}/members", at=timeline["prev_batch"])
    assert status == 200, body
    assert {e["state_key"]: e["content"]["membership"] for e in body["chunk"]} == {
        alice.user_id: "join"
    }
