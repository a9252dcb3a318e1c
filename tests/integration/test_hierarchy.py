"""The space hierarchy: depth-first order, what a user may see, suggested_only,
max_depth and pagination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def add_child(
    owner: RoomUser, space: str, child: str, *, order: str | None = None, suggested: bool = False
) -> None:
    content: dict[str, Any] = {"via": ["test.local"], "suggested": suggested}
    if order is not None:
        content["order"] = order
    await owner.state(space, "m.space.child", content, key=child)


async def rooms_of(user: RoomUser, space: str, **params: str) -> tuple[list[str], Any]:
    status, body = await user.get(f"/v1/rooms/{space}/hierarchy", **params)
    assert status == 200, body
    return [r["room_id"] for r in body["rooms"]], body


async def test_depth_first_walk_with_visibility(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    space = await alice.create_room(
        preset="public_chat", name="Space", creation_content={"type": "m.space"}
    )
    sub = await alice.create_room(preset="public_chat", creation_content={"type": "m.space"})
    a = await alice.create_room(preset="public_chat", name="A")
    b = await alice.create_room(preset="public_chat", name="B")
    private = await alice.create_room(preset="private_chat", name="Hidden")
    readable = await alice.create_room(preset="private_chat", name="Readable")
    await alice.state(
        readable, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    await add_child(alice, space, sub, order="1")
    await add_child(alice, space, b, order="2", suggested=True)
    await add_child(alice, space, private, order="3")
    await add_child(alice, space, readable, order="4")
    await add_child(alice, sub, a)
    # An unknown (remote) child is skipped; a child without via is no child.
    await add_child(alice, space, "!remote:elsewhere.org")
    await alice.state(space, "m.space.child", {}, key=a)

    ids, body = await rooms_of(bob, space)
    assert ids == [space, sub, a, b, readable]
    root = body["rooms"][0]
    assert root["name"] == "Space" and root["room_type"] == "m.space"
    assert root["num_joined_members"] == 1 and root["join_rule"] == "public"
    assert root["room_version"]
    children = {c["state_key"]: c for c in root["children_state"]}
    assert set(children) == {sub, b, private, readable, "!remote:elsewhere.org"}
    assert set(children[sub]) == {"type", "state_key", "sender", "content", "origin_server_ts"}
    # Alice is in every room, so she sees the private one too.
    ids, _ = await rooms_of(alice, space)
    assert ids == [space, sub, a, b, private, readable]

    ids, _ = await rooms_of(alice, space, suggested_only="true")
    assert ids == [space, b]
    ids, _ = await rooms_of(alice, space, max_depth="1")
    assert ids == [space, sub, b, private, readable]
    ids, _ = await rooms_of(alice, space, max_depth="0")
    assert ids == [space]


async def test_pagination(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    space = await alice.create_room(preset="public_chat", creation_content={"type": "m.space"})
    children = [await alice.create_room(preset="public_chat") for _ in range(4)]
    for i, child in enumerate(children):
        await add_child(alice, space, child, order=str(i))
    walked: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        ids, body = await rooms_of(alice, space, **params)
        walked += ids
        if "next_batch" not in body:
            break
        params = {"limit": "2", "from": body["next_batch"]}
    assert walked == [space, *children]
    _, first = await rooms_of(alice, space, limit="2")
    status, body = await alice.get(
        f"/v1/rooms/{space}/hierarchy", **{"from": first["next_batch"], "max_depth": "3"}
    )
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await alice.get(
        f"/v1/rooms/{space}/hierarchy", **{"from": first["next_batch"], "suggested_only": "true"}
    )
    assert status == 400


async def test_denials_and_bad_parameters(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    private = await alice.create_room(preset="private_chat")
    status, body = await bob.get(f"/v1/rooms/{private}/hierarchy")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await bob.get("/v1/rooms/!unknown:test.local/hierarchy")
    assert status == 403
    for params in (
        {"limit": "0"},
        {"limit": "many"},
        {"max_depth": "-1"},
        {"suggested_only": "maybe"},
        {"from": "not-a-token"},
    ):
        status, body = await alice.get(f"/v1/rooms/{private}/hierarchy", **params)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", params
    status, body = await call(client, "GET", f"/v1/rooms/{private}/hierarchy")
    assert status == 401
    # Invited users may look before joining.
    await alice.invite(private, bob.user_id)
    status, body = await bob.get(f"/v1/rooms/{private}/hierarchy")
    assert status == 200 and [r["room_id"] for r in body["rooms"]] == [private]
