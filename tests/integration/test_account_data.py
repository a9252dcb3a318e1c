"""Account data and room tags over HTTP, and the account data stream sync will read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.accounts import account_data
from homeserver.storage.core import streams
from tests.integration.conftest import CLIENT_V3, auth_header, make_user

Client = TestClient[Any, Any]
ROOM = "!room:test.local"


async def _error(resp: Any, status: int, errcode: str) -> None:
    assert resp.status == status, await resp.text()
    assert (await resp.json())["errcode"] == errcode


async def _since(client: Client, user_id: str, position: int) -> list[account_data.AccountDataRow]:
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        return await account_data.account_data_since(conn, user_id, position)


async def _max_position(client: Client) -> int:
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        return (await streams.safe_positions(conn))["account_data"]


async def test_global_account_data(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    url = f"{CLIENT_V3}/user/{alice}/account_data/org.example.config"
    await _error(await client.get(url, headers=auth_header(token)), 404, "M_NOT_FOUND")
    resp = await client.put(url, json={"a": [1, 2, {"b": None}]}, headers=auth_header(token))
    assert resp.status == 200 and await resp.json() == {}
    resp = await client.get(url, headers=auth_header(token))
    assert await resp.json() == {"a": [1, 2, {"b": None}]}
    await client.put(url, json={"a": 2}, headers=auth_header(token))
    resp = await client.get(
        f"/_matrix/client/r0/user/{alice}/account_data/org.example.config",
        headers=auth_header(token),
    )
    assert await resp.json() == {"a": 2}


async def test_room_account_data_is_separate(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    room_url = f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/account_data/org.example.x"
    global_url = f"{CLIENT_V3}/user/{alice}/account_data/org.example.x"
    resp = await client.put(room_url, json={"in": "room"}, headers=headers)
    assert resp.status == 200
    assert await (await client.get(room_url, headers=headers)).json() == {"in": "room"}
    await _error(await client.get(global_url, headers=headers), 404, "M_NOT_FOUND")
    other_room = f"{CLIENT_V3}/user/{alice}/rooms/!other:test.local/account_data/org.example.x"
    await _error(await client.get(other_room, headers=headers), 404, "M_NOT_FOUND")
    bad_room = f"{CLIENT_V3}/user/{alice}/rooms/@notaroom:test.local/account_data/org.example.x"
    await _error(await client.get(bad_room, headers=headers), 400, "M_INVALID_PARAM")
    await _error(await client.put(bad_room, json={}, headers=headers), 400, "M_INVALID_PARAM")


async def test_only_your_own_account_data(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, alice_token = await make_user(client, "alice")
    _, bob_token = await make_user(client, "bob")
    for url in (
        f"{CLIENT_V3}/user/{alice}/account_data/org.example.x",
        f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/account_data/org.example.x",
    ):
        await client.put(url, json={"secret": 1}, headers=auth_header(alice_token))
        await _error(await client.get(url, headers=auth_header(bob_token)), 403, "M_FORBIDDEN")
        resp = await client.put(url, json={"x": 1}, headers=auth_header(bob_token))
        await _error(resp, 403, "M_FORBIDDEN")
        await _error(await client.get(url), 401, "M_MISSING_TOKEN")
        await _error(await client.get(url, headers=auth_header("bad")), 401, "M_UNKNOWN_TOKEN")
        resp = await client.get(url, headers=auth_header(alice_token))
        assert await resp.json() == {"secret": 1}


async def test_server_managed_types(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    for type_ in ("m.fully_read", "m.push_rules"):
        for url in (
            f"{CLIENT_V3}/user/{alice}/account_data/{type_}",
            f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/account_data/{type_}",
        ):
            resp = await client.put(url, json={"event_id": "$x"}, headers=auth_header(token))
            await _error(resp, 405, "M_BAD_JSON")


async def test_bad_bodies(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(max_request_size=2048)
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    url = f"{CLIENT_V3}/user/{alice}/account_data/org.example.x"
    await _error(await client.put(url, data=b"nope", headers=headers), 400, "M_NOT_JSON")
    await _error(await client.put(url, data=b"", headers=headers), 400, "M_NOT_JSON")
    await _error(await client.put(url, json=[1], headers=headers), 400, "M_BAD_JSON")
    await _error(await client.put(url, json={"a": "\x00"}, headers=headers), 400, "M_BAD_JSON")
    await _error(await client.put(url, json={"\x00": 1}, headers=headers), 400, "M_BAD_JSON")
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    await _error(await client.put(url, json={"d": deep}, headers=headers), 400, "M_BAD_JSON")
    resp = await client.put(url, json={"big": "x" * 4000}, headers=headers)
    await _error(resp, 413, "M_TOO_LARGE")
    long_type = f"{CLIENT_V3}/user/{alice}/account_data/{'t' * 300}"
    await _error(await client.put(long_type, json={}, headers=headers), 400, "M_INVALID_PARAM")
    await _error(await client.get(url, headers=headers), 404, "M_NOT_FOUND")


async def test_tags(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    base = f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/tags"
    assert await (await client.get(base, headers=headers)).json() == {"tags": {}}
    resp = await client.put(f"{base}/m.favourite", json={"order": 0.25}, headers=headers)
    assert resp.status == 200 and await resp.json() == {}
    resp = await client.put(f"{base}/u.work", json={}, headers=headers)
    assert resp.status == 200
    resp = await client.get(base, headers=headers)
    assert await resp.json() == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    # The tags are also the room's m.tag account data, which sync delivers.
    m_tag = f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/account_data/m.tag"
    resp = await client.get(m_tag, headers=headers)
    assert await resp.json() == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    resp = await client.delete(f"{base}/m.favourite", headers=headers)
    assert resp.status == 200
    # Deleting a tag that is not there is fine.
    resp = await client.delete(f"{base}/m.favourite", headers=headers)
    assert resp.status == 200
    resp = await client.get(f"/_matrix/client/r0/user/{alice}/rooms/{ROOM}/tags", headers=headers)
    assert await resp.json() == {"tags": {"u.work": {}}}
    # Writing m.tag as room account data replaces the tags.
    resp = await client.put(m_tag, json={"tags": {"m.lowpriority": {"order": 1}}}, headers=headers)
    assert resp.status == 200
    resp = await client.get(base, headers=headers)
    assert await resp.json() == {"tags": {"m.lowpriority": {"order": 1}}}


async def test_bad_tags(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    _, bob_token = await make_user(client, "bob")
    headers = auth_header(token)
    base = f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/tags"
    resp = await client.put(f"{base}/u.x", json={"order": "first"}, headers=headers)
    await _error(resp, 400, "M_BAD_JSON")
    await _error(
        await client.put(f"{base}/u.x", json={"order": True}, headers=headers), 400, "M_BAD_JSON"
    )
    await _error(await client.put(f"{base}/u.x", data=b"{", headers=headers), 400, "M_NOT_JSON")
    resp = await client.put(f"{base}/{'t' * 256}", json={}, headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")
    m_tag = f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/account_data/m.tag"
    await _error(await client.put(m_tag, json={"tags": []}, headers=headers), 400, "M_BAD_JSON")
    resp = await client.put(m_tag, json={"tags": {"u.a": 1}}, headers=headers)
    await _error(resp, 400, "M_BAD_JSON")
    await _error(await client.get(base, headers=auth_header(bob_token)), 403, "M_FORBIDDEN")
    resp = await client.put(f"{base}/u.x", json={}, headers=auth_header(bob_token))
    await _error(resp, 403, "M_FORBIDDEN")
    resp = await client.delete(f"{base}/u.x", headers=auth_header(bob_token))
    await _error(resp, 403, "M_FORBIDDEN")
    await _error(await client.get(base), 401, "M_MISSING_TOKEN")
    resp = await client.get(f"{CLIENT_V3}/user/{alice}/rooms/nope/tags", headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")
    assert await (await client.get(base, headers=headers)).json() == {"tags": {}}


async def test_account_data_stream(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    bob, bob_token = await make_user(client, "bob")
    headers = auth_header(token)
    start = await _max_position(client)
    assert start == 0
    await client.put(f"{CLIENT_V3}/user/{alice}/account_data/a.one", json={"n": 1}, headers=headers)
    await client.put(
        f"{CLIENT_V3}/user/{bob}/account_data/b.one", json={}, headers=auth_header(bob_token)
    )
    await client.put(f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/tags/u.x", json={}, headers=headers)
    middle = await _max_position(client)
    assert middle == 3
    await client.put(f"{CLIENT_V3}/user/{alice}/account_data/a.one", json={"n": 2}, headers=headers)
    rows = await _since(client, alice, start)
    # Each (room, type) once, as it is now, in stream order.
    assert [(r.room_id, r.type, r.content) for r in rows] == [
        (ROOM, "m.tag", {"tags": {"u.x": {}}}),
        (None, "a.one", {"n": 2}),
    ]
    assert [r.stream_id for r in rows] == [3, 4]
    rows = await _since(client, alice, middle)
    assert [r.type for r in rows] == ["a.one"]
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        bounded = await account_data.account_data_since(conn, alice, start, up_to=middle)
    assert [r.type for r in bounded] == ["m.tag"]
    assert [r.type for r in await _since(client, bob, start)] == ["b.one"]
    # A refused write takes no position.
    await client.put(
        f"{CLIENT_V3}/user/{alice}/account_data/m.fully_read", json={}, headers=headers
    )
    assert await _max_position(client) == 4
    # Removing a tag that is not there changes nothing a sync would see.
    await client.delete(f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/tags/u.none", headers=headers)
    assert await _since(client, alice, 4) == []


async def test_changes_wake_the_users_syncs(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    bob, _ = await make_user(client, "bob")
    notifier = client.server.app[HOMESERVER].notifier
    alice_waits = asyncio.create_task(notifier.wait(alice, [], 10))
    bob_waits = asyncio.create_task(notifier.wait(bob, [], 0.5))
    await asyncio.sleep(0)
    resp = await client.put(
        f"{CLIENT_V3}/user/{alice}/rooms/{ROOM}/tags/u.x", json={}, headers=auth_header(token)
    )
    assert resp.status == 200
    assert await asyncio.wait_for(alice_waits, 5) is True
    assert await bob_waits is False
