"""PUT /sendToDevice: delivery per device, idempotency, limits, and delivery until acked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.accounts.auth import hash_token, new_token
from homeserver.services.core.clock import now_ms
from homeserver.services.ephemeral.to_device import MAX_CONTENT_BYTES
from homeserver.services.homeserver import Homeserver
from homeserver.storage.accounts import devices, tokens
from homeserver.storage.core import streams
from tests.integration.conftest import RoomUser, auth_header, call


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def add_device(client: TestClient[Any, Any], user_id: str, device_id: str) -> dict[str, str]:
    """Log the user in on another device; its authorization headers."""
    hs: Homeserver = client.app[HOMESERVER]
    token = new_token("syt")
    async with hs.db.pool.connection() as conn:
        await devices.upsert_device(conn, user_id, device_id, None, now_ms())
        await tokens.insert_access_token(
            conn, hash_token(token), user_id, device_id, now_ms=now_ms()
        )
    return auth_header(token)


async def position(hs: Homeserver) -> int:
    async with hs.db.pool.connection() as conn:
        return (await streams.safe_positions(conn))["to_device"]


async def send(
    client: TestClient[Any, Any], sender: RoomUser, txn: str, messages: Any, type_: str = "m.test"
) -> tuple[int, Any]:
    return await call(
        client,
        "PUT",
        f"/v3/sendToDevice/{type_}/{txn}",
        {"messages": messages},
        headers=sender.headers,
    )


async def test_messages_reach_the_named_devices_once(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    await add_device(client, bob.user_id, "PHONE")

    status, body = await send(
        client,
        alice,
        "t1",
        {
            bob.user_id: {"TESTDEVICE": {"n": 1}, "NOSUCHDEVICE": {"n": 0}},
            "@someone:remote.example": {"*": {"n": 9}},
        },
    )
    assert (status, body) == (200, {})
    status, _ = await send(client, alice, "t2", {bob.user_id: {"*": {"n": 2}}})
    assert status == 200
    # The same transaction id again is the same request: nothing new is queued.
    status, body = await send(client, alice, "t1", {bob.user_id: {"*": {"n": 3}}})
    assert (status, body) == (200, {})

    upto = await position(hs)
    events, last = await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto)
    assert [e["content"]["n"] for e in events] == [1, 2]
    assert events[0] == {"sender": alice.user_id, "type": "m.test", "content": {"n": 1}}
    assert last == upto
    events, _ = await hs.to_device.messages_for(bob.user_id, "PHONE", 0, upto)
    assert [e["content"]["n"] for e in events] == [2]


async def test_redelivered_until_acknowledged(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    for n in range(5):
        status, _ = await send(client, alice, f"t{n}", {bob.user_id: {"TESTDEVICE": {"n": n}}})
        assert status == 200
    upto = await position(hs)

    first, next_pos = await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto, limit=3)
    assert [e["content"]["n"] for e in first] == [0, 1, 2]
    assert next_pos < upto
    # The response was lost: the client asks again from the same place.
    again, same_pos = await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto, limit=3)
    assert again == first and same_pos == next_pos
    # The client comes back with the newer position: that acknowledges the first three.
    await hs.to_device.ack(bob.user_id, "TESTDEVICE", next_pos)
    rest, last = await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", next_pos, upto, limit=3)
    assert [e["content"]["n"] for e in rest] == [3, 4]
    assert last == upto
    assert (await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto))[0] == rest
    await hs.to_device.ack(bob.user_id, "TESTDEVICE", last)
    assert await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto) == ([], upto)


async def test_sending_wakes_the_recipient(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    waiter = asyncio.create_task(hs.notifier.wait(bob.user_id, [], 5.0))
    await asyncio.sleep(0)
    status, _ = await send(client, alice, "t1", {bob.user_id: {"TESTDEVICE": {}}})
    assert status == 200
    assert await waiter


async def test_to_device_denials(client: TestClient[Any, Any]) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    status, body = await call(
        client, "PUT", "/v3/sendToDevice/m.test/x1", data=b"{", headers=alice.headers
    )
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(
        client, "PUT", "/v3/sendToDevice/m.test/x2", {}, headers=alice.headers
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    for n, (messages, errcode) in enumerate(
        (
            ([], "M_BAD_JSON"),
            ({"bob": {"D": {}}}, "M_INVALID_PARAM"),
            ({bob.user_id: ["D"]}, "M_BAD_JSON"),
            ({bob.user_id: {"D": "text"}}, "M_BAD_JSON"),
        )
    ):
        status, body = await send(client, alice, f"bad{n}", messages)
        assert (status, body["errcode"]) == (400, errcode), messages
    status, body = await send(
        client, alice, "big", {bob.user_id: {"TESTDEVICE": {"x": "y" * MAX_CONTENT_BYTES}}}
    )
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    status, body = await send(client, alice, "t" * 256, {bob.user_id: {"TESTDEVICE": {}}})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await call(client, "PUT", "/v3/sendToDevice/m.test/x3", {"messages": {}})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    # Nothing was queued by any of these.
    upto = await position(hs)
    assert await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto) == ([], upto)


async def test_sync_redelivers_a_lost_response_and_forgets_acked_messages(
    client: TestClient[Any, Any],
) -> None:
    hs: Homeserver = client.app[HOMESERVER]
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")

    async def sync(since: str | None) -> tuple[list[Any], str]:
        params = {"timeout": "0"} | ({"since": since} if since else {})
        status, body = await call(client, "GET", "/v3/sync", params=params, headers=bob.headers)
        assert status == 200, body
        return [e["content"]["n"] for e in body.get("to_device", {}).get("events", [])], body[
            "next_batch"
        ]

    assert (await send(client, alice, "t1", {bob.user_id: {"TESTDEVICE": {"n": 1}}}))[0] == 200
    got, first = await sync(None)
    assert got == [1]
    # The response was lost: the same request gets the same messages.
    got, again = await sync(None)
    assert got == [1] and again == first

    assert (await send(client, alice, "t2", {bob.user_id: {"TESTDEVICE": {"n": 2}}}))[0] == 200
    got, second = await sync(first)
    assert got == [2]
    got, retried = await sync(first)
    assert got == [2] and retried == second
    # Coming back with the newer token acknowledges: nothing is delivered twice.
    got, _ = await sync(second)
    assert got == []
    upto = await position(hs)
    assert await hs.to_device.messages_for(bob.user_id, "TESTDEVICE", 0, upto) == ([], upto)
