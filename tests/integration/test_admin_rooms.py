"""The rooms part of the admin API: listing, inspecting and deleting rooms."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser, call, make_user
from tests.integration.test_admin_users import V1, V2, admin_call

Client = TestClient[Any, Any]


@pytest.fixture
async def server(homeserver_client: Callable[..., Any]) -> tuple[Client, str, RoomUser]:
    """(client, admin token, a non-admin room owner)."""
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    owner = await RoomUser.make(client, "owner")
    return client, admin_token, owner


async def test_non_admins_and_unknown_rooms(server: tuple[Client, str, RoomUser]) -> None:
    client, admin_token, owner = server
    room_id = await owner.create_room(name="Mine")
    user_token = owner.headers["Authorization"].split()[1]
    endpoints = [
        ("GET", f"{V1}/rooms", None),
        ("GET", f"{V1}/rooms/{room_id}", None),
        ("GET", f"{V1}/rooms/{room_id}/members", None),
        ("GET", f"{V1}/rooms/{room_id}/state", None),
        ("DELETE", f"{V2}/rooms/{room_id}", {}),
        ("DELETE", f"{V1}/rooms/{room_id}", {}),
        ("GET", f"{V2}/rooms/{room_id}/delete_status", None),
        ("GET", f"{V2}/rooms/delete_status/abc", None),
    ]
    for method, path, body in endpoints:
        status, answer = await admin_call(client, method, path, user_token, body)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), path
    # The owner's room survived the refused deletions.
    status, _ = await admin_call(client, "GET", f"{V1}/rooms/{room_id}", admin_token)
    assert status == 200

    ghost = "!ghost:test.local"
    for method, path, body in [
        ("GET", f"{V1}/rooms/{ghost}", None),
        ("GET", f"{V1}/rooms/{ghost}/members", None),
        ("GET", f"{V1}/rooms/{ghost}/state", None),
        ("DELETE", f"{V2}/rooms/{ghost}", {}),
        ("GET", f"{V2}/rooms/delete_status/nope", None),
    ]:
        status, answer = await admin_call(client, method, path, admin_token, body)
        assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), path
    for params in ({"order_by": "secret"}, {"dir": "x"}, {"from": "-3"}, {"limit": "1.5"}):
        status, answer = await admin_call(client, "GET", f"{V1}/rooms", admin_token, params=params)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), params
    status, answer = await admin_call(
        client, "DELETE", f"{V2}/rooms/{room_id}", admin_token, {"block": "yes"}
    )
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = await admin_call(client, "GET", f"{V1}/rooms/not-a-room", admin_token)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


async def test_list_rooms_pages_sorts_and_searches(
    server: tuple[Client, str, RoomUser],
) -> None:
    client, admin_token, owner = server
    guest = await RoomUser.make(client, "guest")
    alpha = await owner.create_room(name="Alpha", preset="public_chat", room_alias_name="alpha")
    beta = await owner.create_room(name="Beta")
    gamma = await owner.create_room(
        name="Gamma",
        initial_state=[
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    await owner.ok("PUT", f"/directory/list/room/{alpha}", {"visibility": "public"})
    await guest.join(alpha)

    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        status, page = await admin_call(client, "GET", f"{V1}/rooms", admin_token, params=params)
        assert status == 200, page
        assert page["total_rooms"] == 3
        seen += [r["room_id"] for r in page["rooms"]]
        if "next_batch" not in page:
            break
        params = {"limit": "2", "from": str(page["next_batch"])}
    assert seen == [alpha, beta, gamma]  # by name by default
    assert page["prev_batch"] == 0

    async def ids(**query: str) -> list[str]:
        status, page = await admin_call(client, "GET", f"{V1}/rooms", admin_token, params=query)
        assert status == 200, page
        return [r["room_id"] for r in page["rooms"]]

    assert await ids(dir="b") == [gamma, beta, alpha]
    assert (await ids(order_by="joined_members", dir="b"))[0] == alpha
    assert await ids(search_term="amm") == [gamma]
    assert await ids(search_term="#alpha") == [alpha]  # canonical alias
    assert await ids(search_term=beta) == [beta]  # room id
    assert await ids(search_term="zzz") == []

    status, page = await admin_call(
        client, "GET", f"{V1}/rooms", admin_token, params={"search_term": "Alpha"}
    )
    room = page["rooms"][0]
    assert room["name"] == "Alpha"
    assert room["canonical_alias"] == "#alpha:test.local"
    assert room["joined_members"] == 2 and room["joined_local_members"] == 2
    assert room["public"] is True and room["join_rules"] == "public"
    assert room["creator"] == owner.user_id and room["federatable"] is True
    assert room["encryption"] is None and room["state_events"] >= 5
    status, detail = await admin_call(client, "GET", f"{V1}/rooms/{gamma}", admin_token)
    assert detail["encryption"] == "m.megolm.v1.aes-sha2"
    assert detail["public"] is False and detail["join_rules"] == "invite"

    status, members = await admin_call(client, "GET", f"{V1}/rooms/{alpha}/members", admin_token)
    assert members == {"members": sorted([owner.user_id, guest.user_id]), "total": 2}
    status, state = await admin_call(client, "GET", f"{V1}/rooms/{alpha}/state", admin_token)
    types = {event["type"] for event in state["state"]}
    assert {"m.room.create", "m.room.name", "m.room.member", "m.room.join_rules"} <= types


async def wait_for_deletion(client: Client, admin_token: str, delete_id: str) -> dict[str, Any]:
    for _ in range(200):
        status, body = await admin_call(
            client, "GET", f"{V2}/rooms/delete_status/{delete_id}", admin_token
        )
        assert status == 200, body
        if body["status"] in ("complete", "failed"):
            return dict(body)
        await asyncio.sleep(0.05)
    raise AssertionError("room deletion did not finish")


async def public_room_ids(client: Client) -> list[str]:
    status, body = await call(client, "GET", "/v3/publicRooms")
    assert status == 200
    return [room["room_id"] for room in body["chunk"]]


async def test_delete_blocks_and_purges(server: tuple[Client, str, RoomUser]) -> None:
    client, admin_token, owner = server
    member = await RoomUser.make(client, "member")
    room_id = await owner.create_room(name="Spam", preset="public_chat", room_alias_name="spam")
    await owner.ok("PUT", f"/directory/list/room/{room_id}", {"visibility": "public"})
    await member.join(room_id)
    await owner.say(room_id, "buy now")
    kept = await owner.create_room(name="Kept")
    assert room_id in await public_room_ids(client)

    status, body = await admin_call(
        client, "DELETE", f"{V2}/rooms/{room_id}", admin_token, {"block": True, "purge": True}
    )
    assert status == 200 and body["delete_id"]
    done = await wait_for_deletion(client, admin_token, body["delete_id"])
    assert done["status"] == "complete", done
    assert sorted(done["shutdown_room"]["kicked_users"]) == sorted([owner.user_id, member.user_id])
    assert done["shutdown_room"]["local_aliases"] == ["#spam:test.local"]
    status, by_room = await admin_call(
        client, "GET", f"{V2}/rooms/{room_id}/delete_status", admin_token
    )
    assert by_room["results"][0]["delete_id"] == body["delete_id"]

    # Members are out, the room is gone from the directory, the alias and the admin list.
    for user in (owner, member):
        status, joined = await user.get("/v3/joined_rooms")
        assert room_id not in joined["joined_rooms"]
    assert room_id not in await public_room_ids(client)
    status, _ = await call(client, "GET", "/v3/directory/room/%23spam:test.local")
    assert status == 404
    status, rooms = await admin_call(client, "GET", f"{V1}/rooms", admin_token)
    assert [r["room_id"] for r in rooms["rooms"]] == [kept]
    status, _ = await admin_call(client, "GET", f"{V1}/rooms/{room_id}", admin_token)
    assert status == 404
    # Nothing of the room is left in the database.
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        for table in ("events", "state_groups", "room_memberships", "current_state"):
            cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE room_id = %s", (room_id,))
            row = await cur.fetchone()
            assert row is not None and row[0] == 0, table

    # Blocked: nobody may join again.
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/join", json={}, headers=member.headers
    )
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    status, block = await admin_call(client, "GET", f"{V1}/rooms/{room_id}/block", admin_token)
    assert block == {"block": True, "user_id": "@root:test.local"}
    # The kept room is untouched.
    status, _ = await owner.get(f"/v3/rooms/{kept}/state")
    assert status == 200


async def test_delete_without_purge_or_block(server: tuple[Client, str, RoomUser]) -> None:
    client, admin_token, owner = server
    member = await RoomUser.make(client, "member")
    room_id = await owner.create_room(preset="public_chat")
    await owner.ok("PUT", f"/directory/list/room/{room_id}", {"visibility": "public"})
    await member.join(room_id)
    status, body = await admin_call(
        client, "DELETE", f"{V2}/rooms/{room_id}", admin_token, {"purge": False}
    )
    assert status == 200
    done = await wait_for_deletion(client, admin_token, body["delete_id"])
    assert done["status"] == "complete"
    assert room_id not in await public_room_ids(client)
    status, room = await admin_call(client, "GET", f"{V1}/rooms/{room_id}", admin_token)
    assert status == 200 and room["joined_local_members"] == 0 and room["public"] is False
    # Not blocked: a public room can be joined again.
    await member.join(room_id)


async def test_synchronous_v1_delete(server: tuple[Client, str, RoomUser]) -> None:
    client, admin_token, owner = server
    room_id = await owner.create_room()
    status, body = await admin_call(client, "DELETE", f"{V1}/rooms/{room_id}", admin_token, {})
    assert status == 200, body
    assert body["kicked_users"] == [owner.user_id]
    status, _ = await admin_call(client, "GET", f"{V1}/rooms/{room_id}", admin_token)
    assert status == 404
    status, joined = await owner.get("/v3/joined_rooms")
    assert joined["joined_rooms"] == []


async def test_block_unknown_room_ahead(server: tuple[Client, str, RoomUser]) -> None:
    """An admin may block a room id the server has never seen."""
    client, admin_token, owner = server
    room_id = "!future:elsewhere.example"
    status, body = await admin_call(
        client, "DELETE", f"{V2}/rooms/{room_id}", admin_token, {"block": True}
    )
    assert status == 200
    done = await wait_for_deletion(client, admin_token, body["delete_id"])
    assert done["status"] == "complete" and done["shutdown_room"]["kicked_users"] == []
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/join", json={}, headers=owner.headers
    )
    assert resp.status == 403
    status, _ = await admin_call(
        client, "PUT", f"{V1}/rooms/{room_id}/block", admin_token, {"block": False}
    )
    assert status == 200
    status, block = await admin_call(client, "GET", f"{V1}/rooms/{room_id}/block", admin_token)
    assert block == {"block": False}
