"""Device-list tracking: a change to a user's devices or keys reaches exactly the users
sharing a room with them, and users who stop sharing every room are told they left."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.core import streams
from tests.integration.e2ee_devices import Device


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def position(client: TestClient[Any, Any]) -> int:
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        return (await streams.safe_positions(conn))["device_lists"]


async def changes(
    client: TestClient[Any, Any], device: Device, since: int
) -> tuple[list[str], list[str]]:
    hs = client.app[HOMESERVER]
    return await hs.e2ee_keys.device_list_changes(device.user_id, since, await position(client))


async def test_changes_reach_exactly_those_sharing_a_room(client: TestClient[Any, Any]) -> None:
    alice, bob, carol, dave = [
        await Device.make(client, n) for n in ("alice", "bob", "carol", "dave")
    ]
    room = (await alice.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.ok("POST", f"/rooms/{room}/join")
    other = (await carol.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await dave.ok("POST", f"/rooms/{other}/join")

    start = await position(client)
    await alice.publish()
    assert await changes(client, bob, start) == ([alice.user_id], [])
    assert await changes(client, alice, start) == ([alice.user_id], [])
    assert await changes(client, carol, start) == ([], [])
    assert await changes(client, dave, start) == ([], [])

    # Carol joins: she and the room's members now track each other.
    before_join = await position(client)
    await carol.ok("POST", f"/rooms/{room}/join")
    assert await changes(client, alice, before_join) == ([carol.user_id], [])
    assert await changes(client, bob, before_join) == ([carol.user_id], [])
    assert await changes(client, carol, before_join) == (
        sorted([alice.user_id, bob.user_id]),
        [],
    )
    assert await changes(client, dave, before_join) == ([], [])
    # Over the whole range too: Alice's earlier key change counts for Carol now.
    assert (await changes(client, carol, start))[0] == sorted([alice.user_id, bob.user_id])

    # Bob leaves the only room he shares with anyone.
    before_leave = await position(client)
    await bob.ok("POST", f"/rooms/{room}/leave")
    assert await changes(client, alice, before_leave) == ([], [bob.user_id])
    assert await changes(client, carol, before_leave) == ([], [bob.user_id])
    assert await changes(client, bob, before_leave) == ([], sorted([alice.user_id, carol.user_id]))

    # Dave joins the room too, then leaves it: he still shares the other room with Carol.
    await dave.ok("POST", f"/rooms/{room}/join")
    before = await position(client)
    await dave.ok("POST", f"/rooms/{room}/leave")
    assert await changes(client, carol, before) == ([dave.user_id], [])
    assert await changes(client, alice, before) == ([], [dave.user_id])


async def test_deleted_device_and_its_keys(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    room = (await alice.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.ok("POST", f"/rooms/{room}/join")
    laptop = await alice.another("LAPTOP")
    await laptop.publish(one_time=3)
    await laptop.upload(fallback_keys=laptop.one_time_keys(1, fallback=True))

    start = await position(client)
    await laptop.ok("POST", "/logout")
    assert await changes(client, bob, start) == ([alice.user_id], [])
    result = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert result["device_keys"][alice.user_id] == {}
    hs = client.app[HOMESERVER]
    assert await hs.e2ee_keys.one_time_key_counts(alice.user_id, "LAPTOP") == {
        "signed_curve25519": 0
    }
    assert await hs.e2ee_keys.unused_fallback_key_types(alice.user_id, "LAPTOP") == []


async def test_keys_changes_endpoint_and_sync_wakeup(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    room = (await alice.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await bob.ok("POST", f"/rooms/{room}/join")
    start = await position(client)

    hs = client.app[HOMESERVER]
    woken = asyncio.create_task(hs.notifier.wait(bob.user_id, [room], 10))
    await asyncio.sleep(0.1)
    await alice.publish()
    assert await woken

    end = await position(client)
    result = await bob.ok(
        "GET",
        "/keys/changes",
        None,
        **{"from": f"s0_0_0_0_0_{start}_0", "to": f"s9_0_0_0_0_{end}_0"},
    )
    assert result == {"changed": [alice.user_id], "left": []}
    result = await bob.ok(
        "GET", "/keys/changes", None, **{"from": f"s0_0_0_0_0_{end}_0", "to": f"s9_0_0_0_0_{end}_0"}
    )
    assert result == {"changed": [], "left": []}
