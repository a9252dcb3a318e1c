"""Room creation, membership and sending: every event persisted is signed, hashed,
authorised, and the room's state and memberships follow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.accounts.auth import hash_token, new_token
from homeserver.services.core.clock import now_ms
from homeserver.storage.accounts import tokens


async def user(client: TestClient[Any, Any], localpart: str) -> dict[str, str]:
    """Authorization headers of a fresh user with one device."""
    hs = client.app[HOMESERVER]
    user_id = await hs.accounts.register_user(localpart, None)
    token = new_token("syt")
    async with hs.db.pool.connection() as conn:
        await tokens.insert_access_token(
            conn, hash_token(token), user_id, "DEV" + localpart.upper(), now_ms=now_ms()
        )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


@pytest.mark.parametrize("version", ["1", "3", "6", "10", "11", "12"])
async def test_create_room_send_and_join(client: TestClient[Any, Any], version: str) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    resp = await client.post(
        "/_matrix/client/v3/createRoom",
        json={"preset": "public_chat", "name": "Hall", "room_version": version},
        headers=alice,
    )
    assert resp.status == 200, await resp.text()
    room_id = (await resp.json())["room_id"]
    assert room_id.startswith("!")

    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "hi"},
        headers=bob,
    )
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"

    resp = await client.post(f"/_matrix/client/v3/join/{room_id}", json={}, headers=bob)
    assert resp.status == 200, await resp.text()
    resp = await client.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "hi"},
        headers=bob,
    )
    assert resp.status == 200
    first = (await resp.json())["event_id"]
    resp = await client.put(
        f"/_matrix/client/r0/rooms/{room_id}/send/m.room.message/t1",
        json={"msgtype": "m.text", "body": "hi again"},
        headers=bob,
    )
    assert (await resp.json())["event_id"] == first

    resp = await client.get("/_matrix/client/v3/joined_rooms", headers=bob)
    assert (await resp.json())["joined_rooms"] == [room_id]


async def test_private_room_needs_invite_and_bans_stick(client: TestClient[Any, Any]) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    room_id = (
        await (await client.post("/_matrix/client/v3/createRoom", json={}, headers=alice)).json()
    )["room_id"]
    resp = await client.post(f"/_matrix/client/v3/rooms/{room_id}/join", headers=bob)
    assert resp.status == 403
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/invite",
        json={"user_id": "@bob:test.local"},
        headers=alice,
    )
    assert resp.status == 200, await resp.text()
    assert (
        await client.post(f"/_matrix/client/v3/rooms/{room_id}/join", headers=bob)
    ).status == 200
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/ban",
        json={"user_id": "@bob:test.local", "reason": "spam"},
        headers=alice,
    )
    assert resp.status == 200
    resp = await client.post(f"/_matrix/client/v3/rooms/{room_id}/join", headers=bob)
    assert resp.status == 403
    # Bob cannot ban Alice: no power.
    resp = await client.post(
        f"/_matrix/client/v3/rooms/{room_id}/kick",
        json={"user_id": "@alice:test.local"},
        headers=bob,
    )
    assert resp.status == 403


async def test_unknown_room_version(client: TestClient[Any, Any]) -> None:
    alice = await user(client, "alice")
    resp = await client.post(
        "/_matrix/client/v3/createRoom", json={"room_version": "99"}, headers=alice
    )
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"


async def test_concurrent_sends_lose_nothing(client: TestClient[Any, Any]) -> None:
    alice = await user(client, "alice")
    room_id = (
        await (await client.post("/_matrix/client/v3/createRoom", json={}, headers=alice)).json()
    )["room_id"]

    async def send(i: int) -> str:
        resp = await client.put(
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/c{i}",
            json={"msgtype": "m.text", "body": str(i)},
            headers=alice,
        )
        assert resp.status == 200
        return str((await resp.json())["event_id"])

    ids = await asyncio.gather(*(send(i) for i in range(40)))
    assert len(set(ids)) == 40
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM forward_extremities WHERE room_id = %s", (room_id,)
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == 1


async def test_identical_rooms_created_at_once_get_distinct_ids(
    client: TestClient[Any, Any],
) -> None:
    alice = await user(client, "alice")

    async def create() -> str:
        resp = await client.post(
            "/_matrix/client/v3/createRoom", json={"room_version": "12"}, headers=alice
        )
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["room_id"])

    ids = await asyncio.gather(*(create() for _ in range(10)))
    assert len(set(ids)) == 10


async def test_batched_sends_keep_their_own_outcomes(client: TestClient[Any, Any]) -> None:
    """Concurrent sends into one room are written together; a refused one does not
    spoil the others, and a repeated txn id still gets the first event id."""
    alice = await user(client, "alice")
    mallory = await user(client, "mallory")
    room_id = (
        await (await client.post("/_matrix/client/v3/createRoom", json={}, headers=alice)).json()
    )["room_id"]

    async def send(headers: dict[str, str], txn: str) -> tuple[int, Any]:
        resp = await client.put(
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
            json={"msgtype": "m.text", "body": txn},
            headers=headers,
        )
        return resp.status, await resp.json()

    results = await asyncio.gather(
        *(send(alice, f"a{i}") for i in range(10)),
        *(send(mallory, f"m{i}") for i in range(3)),
        send(alice, "dup"),
        send(alice, "dup"),
    )
    alice_results, mallory_results, dups = results[:10], results[10:13], results[13:]
    assert all(status == 200 for status, _ in alice_results)
    assert len({body["event_id"] for _, body in alice_results}) == 10
    assert all(status == 403 for status, _ in mallory_results)
    assert dups[0] == dups[1] and dups[0][0] == 200


async def test_create_room_topic_is_rich_and_overrides_initial_state(
    client: TestClient[Any, Any],
) -> None:
    alice = await user(client, "alice")
    initial = [
        {"type": "m.room.topic", "content": {"topic": "from initial_state"}},
        {"type": "m.room.name", "content": {"name": "from initial_state"}},
    ]
    resp = await client.post(
        "/_matrix/client/v3/createRoom",
        json={"topic": "Tea & cake", "name": "Kitchen", "initial_state": initial},
        headers=alice,
    )
    assert resp.status == 200, await resp.text()
    room_id = (await resp.json())["room_id"]
    resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/state", headers=alice)
    state = await resp.json()
    topics = [e["content"] for e in state if e["type"] == "m.room.topic"]
    assert topics == [
        {
            "topic": "Tea & cake",
            "m.topic": {"m.text": [{"body": "Tea & cake", "mimetype": "text/plain"}]},
        }
    ]
    assert [e["content"] for e in state if e["type"] == "m.room.name"] == [{"name": "Kitchen"}]
    # One topic and one name event in the room's history: initial_state's were overwritten.
    resp = await client.get(
        f"/_matrix/client/v3/rooms/{room_id}/messages",
        params={"dir": "b", "limit": "50"},
        headers=alice,
    )
    types = [e["type"] for e in (await resp.json())["chunk"]]
    assert types.count("m.room.topic") == 1 and types.count("m.room.name") == 1

    # initial_state alone sets the topic as given.
    resp = await client.post(
        "/_matrix/client/v3/createRoom", json={"initial_state": initial[:1]}, headers=alice
    )
    room_id = (await resp.json())["room_id"]
    resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic", headers=alice)
    assert await resp.json() == {"topic": "from initial_state"}
