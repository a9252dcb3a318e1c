"""Room aliases and a room's visibility in the directory: who may create, read and
delete them, and how `m.room.canonical_alias` is checked against them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, auth_header, call, make_user

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


def alias_path(alias: str, version: str = "v3") -> str:
    return f"/{version}/directory/room/{quote(alias, safe='')}"


async def test_alias_lifecycle(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(preset="public_chat")
    alias = "#hall:test.local"

    status, body = await call(
        client, "PUT", alias_path(alias), {"room_id": room_id}, headers=alice.headers
    )
    assert (status, body) == (200, {})
    status, body = await call(client, "GET", alias_path(alias))
    assert status == 200
    assert body == {"room_id": room_id, "servers": ["test.local"]}
    # The legacy r0 prefix serves the same.
    status, body = await call(client, "GET", alias_path(alias, "r0"))
    assert status == 200 and body["room_id"] == room_id

    status, body = await call(
        client, "PUT", alias_path(alias), {"room_id": room_id}, headers=alice.headers
    )
    assert status == 409 and body["errcode"] == "M_ROOM_IN_USE"

    status, body = await alice.get(f"/v3/rooms/{room_id}/aliases")
    assert status == 200 and body == {"aliases": [alias]}

    status, body = await call(client, "DELETE", alias_path(alias), headers=alice.headers)
    assert (status, body) == (200, {})
    status, body = await call(client, "GET", alias_path(alias))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await call(client, "DELETE", alias_path(alias), headers=alice.headers)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_alias_creation_denials(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room()
    put = {"room_id": room_id}

    for alias in ("#x:elsewhere.org", "#x:test.local:notaport", "nohash:test.local", "#x"):
        status, body = await call(client, "PUT", alias_path(alias), put, headers=alice.headers)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", alias
    status, body = await call(client, "PUT", alias_path("#x:test.local"), put, headers=bob.headers)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await call(
        client,
        "PUT",
        alias_path("#x:test.local"),
        {"room_id": "!nope:test.local"},
        headers=alice.headers,
    )
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await call(
        client, "PUT", alias_path("#x:test.local"), data=b"{nope", headers=alice.headers
    )
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    status, body = await call(
        client, "PUT", alias_path("#x:test.local"), {"room_id": 5}, headers=alice.headers
    )
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await call(client, "PUT", alias_path("#x:test.local"), put)
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await call(client, "GET", alias_path("#x:elsewhere.org"))
    assert status == 404
    status, body = await call(client, "GET", alias_path("bad"))
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_alias_deletion_rights(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    _, admin_token = await make_user(client, "root", admin=True)
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await carol.join(room_id)
    for alias, owner in (("#bobs:test.local", bob), ("#alices:test.local", alice)):
        status, _ = await call(
            client, "PUT", alias_path(alias), {"room_id": room_id}, headers=owner.headers
        )
        assert status == 200

    # Carol neither created the alias nor may change the canonical alias.
    status, body = await call(
        client, "DELETE", alias_path("#alices:test.local"), headers=carol.headers
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # Bob created his; Alice has the power; admins may.
    status, _ = await call(client, "DELETE", alias_path("#bobs:test.local"), headers=bob.headers)
    assert status == 200
    status, _ = await call(
        client, "PUT", alias_path("#bobs:test.local"), {"room_id": room_id}, headers=bob.headers
    )
    assert status == 200
    status, _ = await call(client, "DELETE", alias_path("#bobs:test.local"), headers=alice.headers)
    assert status == 200
    status, _ = await call(
        client, "DELETE", alias_path("#alices:test.local"), headers=auth_header(admin_token)
    )
    assert status == 200


async def test_deleting_an_alias_removes_it_from_the_canonical_alias(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(preset="public_chat", room_alias_name="main")
    status, _ = await call(
        client, "PUT", alias_path("#alt:test.local"), {"room_id": room_id}, headers=alice.headers
    )
    assert status == 200
    await alice.state(
        room_id,
        "m.room.canonical_alias",
        {"alias": "#main:test.local", "alt_aliases": ["#alt:test.local"]},
    )
    status, _ = await call(client, "DELETE", alias_path("#alt:test.local"), headers=alice.headers)
    assert status == 200
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.canonical_alias/")
    assert status == 200 and body == {"alias": "#main:test.local", "alt_aliases": []}
    status, _ = await call(client, "DELETE", alias_path("#main:test.local"), headers=alice.headers)
    assert status == 200
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.canonical_alias/")
    assert status == 200 and body == {"alt_aliases": []}


async def test_local_aliases_need_membership_or_world_readable(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(room_alias_name="secret")
    status, body = await bob.get(f"/v3/rooms/{room_id}/aliases")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await bob.get("/v3/rooms/!unknown:test.local/aliases")
    assert status == 403
    await alice.state(
        room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    status, body = await bob.get(f"/r0/rooms/{room_id}/aliases")
    assert status == 200 and body == {"aliases": ["#secret:test.local"]}


async def test_canonical_alias_is_checked(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(room_alias_name="mine")
    other = await alice.create_room(room_alias_name="other")
    path = f"/v3/rooms/{room_id}/state/m.room.canonical_alias/"
    cases = [
        ({"alias": "#missing:test.local"}, "M_BAD_ALIAS"),
        ({"alias": "#other:test.local"}, "M_BAD_ALIAS"),
        ({"alias": "#far:elsewhere.org"}, "M_BAD_ALIAS"),
        ({"alias": "not an alias"}, "M_INVALID_PARAM"),
        ({"alias": 7}, "M_INVALID_PARAM"),
        ({"alias": "#mine:test.local", "alt_aliases": ["#other:test.local"]}, "M_BAD_ALIAS"),
        ({"alt_aliases": "#mine:test.local"}, "M_INVALID_PARAM"),
    ]
    for content, errcode in cases:
        status, body = await call(client, "PUT", path, content, headers=alice.headers)
        assert status == 400 and body["errcode"] == errcode, content
    await alice.state(room_id, "m.room.canonical_alias", {"alias": "#mine:test.local"})
    await alice.state(
        other, "m.room.canonical_alias", {"alias": "#other:test.local", "alt_aliases": []}
    )
    # Removing aliases, or keeping ones already there, needs no check.
    await alice.state(room_id, "m.room.canonical_alias", {"alias": "#mine:test.local"})
    await alice.state(room_id, "m.room.canonical_alias", {})


async def test_directory_visibility(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    eve = await RoomUser.make(client, "eve")
    _, admin_token = await make_user(client, "root", admin=True)
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    path = f"/v3/directory/list/room/{room_id}"

    status, body = await call(client, "GET", path)
    assert (status, body) == (200, {"visibility": "private"})
    status, body = await call(client, "PUT", path, {"visibility": "public"}, headers=bob.headers)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await call(client, "PUT", path, {"visibility": "public"}, headers=eve.headers)
    assert status == 403
    status, body = await call(client, "PUT", path, {"visibility": "secret"}, headers=alice.headers)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(client, "PUT", path, data=b"[]", headers=alice.headers)
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    # `visibility` defaults to public.
    status, _ = await call(client, "PUT", path, {}, headers=alice.headers)
    assert status == 200
    status, body = await call(client, "GET", f"/r0/directory/list/room/{room_id}")
    assert (status, body) == (200, {"visibility": "public"})
    status, _ = await call(
        client, "PUT", path, {"visibility": "private"}, headers=auth_header(admin_token)
    )
    assert status == 200
    status, body = await call(client, "GET", path)
    assert body == {"visibility": "private"}

    status, body = await call(client, "GET", "/v3/directory/list/room/!nope:test.local")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await call(
        client, "PUT", "/v3/directory/list/room/!nope:test.local", {}, headers=alice.headers
    )
    assert status == 404
    public_id = await alice.create_room(visibility="public")
    status, body = await call(client, "GET", f"/v3/directory/list/room/{public_id}")
    assert body == {"visibility": "public"}
