"""Browsing another server's room directory and spaces over federation: the client's
`server` parameter on `/publicRooms`, and the federation `/publicRooms` that serves it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.remote.client import RequestFailed
from tests.integration.conftest import RoomUser
from tests.integration.peers import PEER_CONFIG, free_port

Client = TestClient[Any, Any]


async def peer(homeserver_client: Callable[..., Any], shares_directory: bool = True) -> Client:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}",
        port=port,
        allow_public_rooms_over_federation=shares_directory,
        **PEER_CONFIG,
        **{"rate_limits.enabled": False},
    )
    return client


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def test_a_directory_not_shared(homeserver_client: Callable[..., Any]) -> None:
    """Synapse's default, and ours: other servers may not read the directory."""
    a = await peer(homeserver_client, shares_directory=False)
    b = await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    await alice.create_room(visibility="public", preset="public_chat", name="Ours only")
    status, body = await bob.get("/v3/publicRooms", server=name_of(a))
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await alice.get("/v3/publicRooms")
    assert status == 200 and [r["name"] for r in body["chunk"]] == ["Ours only"]


def name_of(client: Client) -> str:
    return str(client.app[HOMESERVER].server_name)


async def test_browse_other_servers_directory(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    rooms = {}
    for name in ("Tea", "Coffee", "Cocoa"):
        rooms[name] = await alice.create_room(
            visibility="public", preset="public_chat", name=name, topic=f"All about {name}"
        )
    await alice.create_room(preset="public_chat", name="Unlisted")
    server = name_of(a)

    status, page = await bob.get("/v3/publicRooms", server=server)
    assert status == 200, page
    assert {r["name"] for r in page["chunk"]} == {"Tea", "Coffee", "Cocoa"}
    assert page["total_room_count_estimate"] == 3
    tea = next(r for r in page["chunk"] if r["name"] == "Tea")
    assert tea["room_id"] == rooms["Tea"] and tea["join_rule"] == "public"

    # Pages of one, followed by the other server's tokens, cover every room once.
    seen: list[str] = []
    since = None
    for _ in range(5):
        params = {"server": server, "limit": "1", **({"since": since} if since else {})}
        status, page = await bob.get("/v3/publicRooms", **params)
        assert status == 200 and len(page["chunk"]) == 1
        seen.append(page["chunk"][0]["room_id"])
        since = page.get("next_batch")
        if since is None:
            break
    assert sorted(seen) == sorted(rooms.values())

    # A filter goes over federation as a POST.
    found = await bob.ok(
        "POST", f"/publicRooms?server={server}", {"filter": {"generic_search_term": "coff"}}
    )
    assert [r["room_id"] for r in found["chunk"]] == [rooms["Coffee"]]
    found = await bob.ok(
        "POST", f"/publicRooms?server={server}", {"filter": {"room_types": ["m.space"]}}
    )
    assert found["chunk"] == []


async def test_remote_directory_errors(two: tuple[Client, Client]) -> None:
    a, b = two
    bob = await RoomUser.make(b, "bob")
    # Asking another server needs a login; a malformed server name is refused.
    resp = await b.get("/_matrix/client/v3/publicRooms", params={"server": name_of(a)})
    assert resp.status == 401
    status, body = await bob.get("/v3/publicRooms", server="not a server!")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # A server that does not answer: 502, not a hang or a 500.
    status, body = await bob.get("/v3/publicRooms", server=f"127.0.0.1:{free_port()}")
    assert status == 502
    # The other server's refusal of a bad token comes through as its own error.
    status, body = await bob.get("/v3/publicRooms", server=name_of(a), since="garbage")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_federation_public_rooms_needs_a_signed_request(two: tuple[Client, Client]) -> None:
    a, b = two
    resp = await a.get("/_matrix/federation/v1/publicRooms")
    assert resp.status == 401
    hs_b = b.app[HOMESERVER]
    answer = await hs_b.remote_client.get_json(
        name_of(a), "/_matrix/federation/v1/publicRooms", {"include_all_networks": "true"}
    )
    assert answer["chunk"] == [] and answer["total_room_count_estimate"] == 0
    with pytest.raises(RequestFailed) as failed:
        await hs_b.remote_client.post_json(
            name_of(a), "/_matrix/federation/v1/publicRooms", {"limit": "ten"}
        )
    assert failed.value.status == 400


async def add_child(
    owner: RoomUser, space: str, child: str, via: str, order: str, suggested: bool = False
) -> None:
    content = {"via": [via], "order": order, "suggested": suggested}
    await owner.state(space, "m.space.child", content, key=child)


async def test_space_spanning_two_servers(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    carol = await RoomUser.make(a, "carol")
    bob = await RoomUser.make(b, "bob")
    space_type = {"type": "m.space"}
    space = await alice.create_room(preset="public_chat", name="S", creation_content=space_type)
    ours = await alice.create_room(preset="public_chat", name="On A")
    theirs = await bob.create_room(preset="public_chat", name="On B")
    sub = await bob.create_room(preset="public_chat", name="Sub", creation_content=space_type)
    deep = await bob.create_room(preset="public_chat", name="Deep")
    hidden = await bob.create_room(preset="private_chat", name="Hidden")
    await add_child(alice, space, ours, name_of(a), "1")
    await add_child(alice, space, theirs, name_of(b), "2", suggested=True)
    await add_child(alice, space, sub, name_of(b), "3")
    await add_child(bob, sub, deep, name_of(b), "1")
    await add_child(bob, sub, hidden, name_of(b), "2")

    # A user of A, in none of B's rooms, walks the space into B's rooms.
    status, body = await carol.get(f"/v1/rooms/{space}/hierarchy")
    assert status == 200, body
    assert [r["room_id"] for r in body["rooms"]] == [space, ours, theirs, sub, deep]
    by_id = {r["room_id"]: r for r in body["rooms"]}
    assert by_id[theirs]["name"] == "On B" and by_id[sub]["room_type"] == "m.space"
    assert [c["state_key"] for c in by_id[sub]["children_state"]] == [deep, hidden]
    status, body = await carol.get(f"/v1/rooms/{space}/hierarchy", suggested_only="true")
    assert [r["room_id"] for r in body["rooms"]] == [space, theirs]
    status, body = await carol.get(f"/v1/rooms/{space}/hierarchy", max_depth="1", limit="2")
    assert [r["room_id"] for r in body["rooms"]] == [space, ours]
    status, body = await carol.get(
        f"/v1/rooms/{space}/hierarchy", max_depth="1", **{"from": body["next_batch"]}
    )
    assert [r["room_id"] for r in body["rooms"]] == [theirs, sub]

    # What B serves over federation: the room, its children it holds, the hidden one
    # named as inaccessible; a private room is unknown to other servers.
    client_a = a.app[HOMESERVER].remote_client
    answer = await client_a.get_json(name_of(b), f"/_matrix/federation/v1/hierarchy/{sub}")
    assert answer["room"]["room_id"] == sub and answer["room"]["num_joined_members"] == 1
    assert {c["state_key"] for c in answer["room"]["children_state"]} == {deep, hidden}
    assert all("origin_server_ts" in c for c in answer["room"]["children_state"])
    assert [c["room_id"] for c in answer["children"]] == [deep]
    assert answer["inaccessible_children"] == [hidden]
    with pytest.raises(RequestFailed) as failed:
        await client_a.get_json(name_of(b), f"/_matrix/federation/v1/hierarchy/{hidden}")
    assert failed.value.status == 404 and failed.value.errcode == "M_NOT_FOUND"
    answer = await client_a.get_json(
        name_of(b), f"/_matrix/federation/v1/hierarchy/{sub}", {"suggested_only": "true"}
    )
    assert answer["room"]["children_state"] == [] and answer["children"] == []
