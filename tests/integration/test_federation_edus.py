"""EDUs and E2EE keys between two of our servers on loopback: each EDU type both ways
through the real outbound queue, signed `PUT /send` and the inbound EDU handler;
forged EDUs dropped; keys queried and one-time keys claimed across the servers.

Rooms are shared by writing the other server's members into `room_memberships` (joins
over federation are tested elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nacl.signing
import orjson
import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from homeserver.storage.ephemeral import presence as presence_store
from homeserver.storage.ephemeral import receipts
from homeserver.storage.remote import device_lists as remote
from homeserver.storage.rooms import memberships
from tests.integration.e2ee_devices import Device, public, sign
from tests.integration.peers import PEER_CONFIG, free_port


@pytest.fixture
async def peers(
    homeserver_client: Callable[..., Any],
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    clients = []
    for _ in range(2):
        port = free_port()
        clients.append(
            await homeserver_client(
                server_name=f"127.0.0.1:{port}",
                port=port,
                **PEER_CONFIG,
                **{"rate_limits.enabled": False, "presence.enabled": True},
            )
        )
    return clients[0], clients[1]


def hs_of(client: TestClient[Any, Any]) -> Homeserver:
    hs: Homeserver = client.app[HOMESERVER]
    return hs


async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Poll until `probe` returns something truthy; return it."""
    deadline = time.monotonic() + within
    while not (result := await probe()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return result


async def share_room(creator: Device, other: Device) -> tuple[str, str]:
    """A room made on the creator's server, with both users joined on both servers;
    (room id, id of a message in it)."""
    room_id = (await creator.ok("POST", "/createRoom", {}))["room_id"]
    sent = await creator.ok(
        "PUT", f"/rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}
    )
    rows = [
        (other.client, other.user_id),
        (other.client, creator.user_id),
        (creator.client, other.user_id),
    ]
    for client, user_id in rows:
        async with hs_of(client).db.pool.connection() as conn:
            await memberships.upsert_membership(
                conn,
                memberships.MembershipRow(
                    room_id, user_id, "join", "$joined", user_id, 0, None, None
                ),
            )
    return room_id, sent["event_id"]


@pytest.fixture
async def pair(
    peers: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> tuple[Device, Device, str, str]:
    """alice on the first server, bob on the second, in a room made by alice."""
    a, b = peers
    alice = await Device.make(a, "alice")
    bob = await Device.make(b, "bob")
    room_id, event_id = await share_room(alice, bob)
    return alice, bob, room_id, event_id


async def test_typing_both_ways(pair: tuple[Device, Device, str, str]) -> None:
    alice, bob, room_id, _ = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    await alice.ok("PUT", f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": True})
    await eventually(lambda: _async(hs_b.typing.typing_in(room_id) == [alice.user_id]))
    await hs_b.typing.set_typing(room_id, bob.user_id, True, 30_000)
    await eventually(lambda: _async(bob.user_id in hs_a.typing.typing_in(room_id)))
    await alice.ok("PUT", f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": False})
    await eventually(lambda: _async(hs_b.typing.typing_in(room_id) == [bob.user_id]))


async def _async(value: Any) -> Any:
    return value


async def _receipts(hs: Homeserver, room_id: str, viewer: str) -> list[receipts.ReceiptRow]:
    async with hs.db.pool.connection() as conn:
        return await receipts.receipts_in_rooms(conn, [room_id], 0, 2**62, viewer, "m.read.private")


async def test_receipts_both_ways_and_private_ones_stay(
    pair: tuple[Device, Device, str, str],
) -> None:
    alice, bob, room_id, event_id = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    await alice.ok("POST", f"/rooms/{room_id}/receipt/m.read.private/{event_id}", {})
    await alice.ok("POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {})
    rows = await eventually(lambda: _receipts(hs_b, room_id, bob.user_id))
    assert [(r.user_id, r.receipt_type, r.event_id) for r in rows] == [
        (alice.user_id, "m.read", event_id)
    ]
    # The other way, in a room made on bob's server.
    room_b, event_b = await share_room(bob, alice)
    await bob.ok("POST", f"/rooms/{room_b}/receipt/m.read/{event_b}", {"thread_id": "main"})
    [row] = await eventually(lambda: _receipts(hs_a, room_b, alice.user_id))
    assert (row.user_id, row.event_id, row.thread_id) == (bob.user_id, event_b, "main")


async def test_presence_both_ways(pair: tuple[Device, Device, str, str]) -> None:
    alice, bob, _, _ = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)

    async def state_on(hs: Homeserver, user_id: str) -> tuple[str, str | None] | None:
        async with hs.db.pool.connection() as conn:
            row = await presence_store.get_presence(conn, user_id)
        return (row.state, row.status_msg) if row else None

    await hs_a.presence.set_presence(alice.user_id, "online", "busy")
    assert await eventually(lambda: state_on(hs_b, alice.user_id)) == ("online", "busy")
    await hs_b.presence.set_presence(bob.user_id, "unavailable")
    assert await eventually(lambda: state_on(hs_a, bob.user_id)) == ("unavailable", None)


async def test_to_device_both_ways_once(pair: tuple[Device, Device, str, str]) -> None:
    alice, bob, _, _ = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    body = {"messages": {bob.user_id: {"*": {"hello": "bob"}}}}
    await alice.ok("PUT", "/sendToDevice/m.test/txn1", body)

    async def inbox(hs: Homeserver, device: Device) -> list[dict[str, Any]]:
        events, _ = await hs.to_device.messages_for(device.user_id, device.device_id, 0, 2**62)
        return events

    [event] = await eventually(lambda: inbox(hs_b, bob))
    assert event == {"sender": alice.user_id, "type": "m.test", "content": {"hello": "bob"}}
    await bob.ok(
        "PUT", "/sendToDevice/m.test/txn1", {"messages": {alice.user_id: {"TESTDEVICE": {}}}}
    )
    assert len(await eventually(lambda: inbox(hs_a, alice))) == 1
    # The same message id twice (a retried transaction) is delivered once.
    edu = {
        "sender": alice.user_id,
        "type": "m.test",
        "message_id": "m1",
        "messages": {bob.user_id: {"TESTDEVICE": {"n": 1}}},
    }
    for _ in range(2):
        await hs_b.edus.handle(hs_a.server_name, "m.direct_to_device", edu)
    assert len(await inbox(hs_b, bob)) == 2


async def test_forged_and_malformed_edus_are_dropped(
    pair: tuple[Device, Device, str, str],
) -> None:
    alice, bob, room_id, event_id = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    liar = "evil.example"
    await hs_b.edus.handle(
        liar, "m.typing", {"room_id": room_id, "user_id": alice.user_id, "typing": True}
    )
    receipt = {room_id: {"m.read": {alice.user_id: {"event_ids": [event_id], "data": {}}}}}
    await hs_b.edus.handle(liar, "m.receipt", receipt)
    await hs_b.edus.handle(liar, "m.presence", {"push": [{"user_id": alice.user_id}]})
    await hs_b.edus.handle(
        liar,
        "m.direct_to_device",
        {"sender": alice.user_id, "type": "m.t", "message_id": "x", "messages": {}},
    )
    await hs_b.edus.handle(liar, "m.device_list_update", {"user_id": alice.user_id})
    # The right origin but hostile shapes.
    hostile: list[Any] = [None, [], "x", {"room_id": "\x00", "user_id": alice.user_id}]
    for content in hostile:
        for edu_type in ("m.typing", "m.receipt", "m.presence", "m.direct_to_device"):
            await hs_b.edus.handle(hs_a.server_name, edu_type, content)
    await hs_b.edus.handle(hs_a.server_name, "m.receipt", {"\x00": {"m.read": {"\x00": {}}}})
    await hs_b.edus.handle(hs_a.server_name, "m.device_list_update", {"user_id": 5})
    assert hs_b.typing.typing_in(room_id) == []
    assert await _receipts(hs_b, room_id, bob.user_id) == []
    async with hs_b.db.pool.connection() as conn:
        assert await presence_store.get_presence(conn, alice.user_id) is None


async def _cached(hs: Homeserver, user_id: str) -> dict[str, Any]:
    async with hs.db.pool.connection() as conn:
        return {d.device_id: d for d in await remote.get_devices(conn, [user_id])}


async def test_device_lists_keys_query_and_claim(
    pair: tuple[Device, Device, str, str],
) -> None:
    alice, bob, _, _ = pair
    hs_b = hs_of(bob.client)
    await alice.publish(one_time=2)
    # bob's server fetches alice's list from her server and caches it.
    answer = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert answer["failures"] == {}
    assert (
        answer["device_keys"][alice.user_id]["TESTDEVICE"]["keys"] == (alice.device_keys()["keys"])
    )
    assert set(await _cached(hs_b, alice.user_id)) == {"TESTDEVICE"}
    sync = await bob.ok("GET", "/sync")
    since = sync["next_batch"]

    # A new device: an m.device_list_update updates the cache and bob's sync.
    laptop = await alice.another("LAPTOP")
    await laptop.publish()
    await eventually(lambda: _async_has(hs_b, alice.user_id, "LAPTOP"))

    async def changed_in_sync() -> bool:
        # The cache row and the user's device-list stream entry are separate writes:
        # bob's sync reports the change once the stream has reached it.
        sync = await bob.ok("GET", "/sync", since=since, timeout="0")
        return alice.user_id in sync.get("device_lists", {}).get("changed", [])

    await eventually(changed_in_sync)
    answer = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: ["LAPTOP"]}})
    assert list(answer["device_keys"][alice.user_id]) == ["LAPTOP"]

    # bob claims one of alice's one-time keys over federation.
    claim = {"one_time_keys": {alice.user_id: {"TESTDEVICE": "signed_curve25519"}}}
    claimed = await bob.ok("POST", "/keys/claim", claim)
    assert claimed["failures"] == {}
    [key_id] = claimed["one_time_keys"][alice.user_id]["TESTDEVICE"]
    assert key_id.startswith("signed_curve25519:")
    counts = await alice.upload()
    assert counts["one_time_key_counts"]["signed_curve25519"] == 1

    # A deleted device is announced too.
    await hs_of(alice.client).devices.delete_devices(alice.user_id, ["LAPTOP"])
    await eventually(lambda: _async_not(_async_has(hs_b, alice.user_id, "LAPTOP")))


async def _async_has(hs: Homeserver, user_id: str, device_id: str) -> bool:
    return device_id in await _cached(hs, user_id)


async def _async_not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_device_list_gap_resyncs(pair: tuple[Device, Device, str, str]) -> None:
    alice, bob, _, _ = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    await alice.publish()
    await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    # An update that follows one bob's server never saw: it refetches the whole list.
    phone = await alice.another("PHONE")
    async with hs_a.db.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (%s, %s, %s)",
            (alice.user_id, "PHONE", _json(phone.device_keys())),
        )
    edu = {"user_id": alice.user_id, "device_id": "OTHER", "stream_id": 99, "prev_id": [98]}
    await hs_b.edus.handle(hs_a.server_name, "m.device_list_update", edu)
    await eventually(lambda: _async_has(hs_b, alice.user_id, "PHONE"))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def test_signing_key_update(pair: tuple[Device, Device, str, str]) -> None:
    alice, bob, _, _ = pair
    hs_b = hs_of(bob.client)
    await alice.publish()
    await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    master = nacl.signing.SigningKey.generate()
    master_key = {
        "user_id": alice.user_id,
        "usage": ["master"],
        "keys": {f"ed25519:{public(master)}": public(master)},
    }
    sign(master_key, alice.user_id, f"ed25519:{public(master)}", master)
    await alice.ok("POST", "/keys/device_signing/upload", {"master_key": master_key})

    async def cached_master() -> Any:
        async with hs_b.db.pool.connection() as conn:
            return await remote.get_cross_signing_keys(conn, [alice.user_id])

    [(_, key_type, _)] = await eventually(cached_master)
    assert key_type == "master"
    answer = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert answer["master_keys"][alice.user_id]["keys"] == master_key["keys"]


async def test_federation_key_endpoints_refuse_and_fail_well(
    pair: tuple[Device, Device, str, str],
) -> None:
    alice, bob, _, _ = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    client = hs_b.remote_client
    path = "/_matrix/federation/v1/user/devices/"
    with pytest.raises(Exception) as refused:
        await client.get_json(hs_a.server_name, path + "%40bob%3A" + hs_b.server_name)
    assert getattr(refused.value, "status", None) == 403
    for body in ({"device_keys": 5}, {"device_keys": {alice.user_id: ["", 7]}}, {}):
        answer = await client.post_json(
            hs_a.server_name, "/_matrix/federation/v1/user/keys/query", body
        )
        assert "device_keys" in answer
    claim = {"one_time_keys": {alice.user_id: {"": "x"}, bob.user_id: {"D": "a"}}}
    answer = await client.post_json(
        hs_a.server_name, "/_matrix/federation/v1/user/keys/claim", claim
    )
    assert answer == {"one_time_keys": {}}
    # U+0000 is refused at the edge (test_federation_bad_input.py).
    with pytest.raises(RequestFailed) as refused_nul:
        await client.post_json(
            hs_a.server_name, "/_matrix/federation/v1/user/keys/claim", {"x": "\x00"}
        )
    assert refused_nul.value.status == 400
    # An unreachable server is a failure of its own; the others still answer.
    dead = f"@carol:127.0.0.1:{free_port()}"
    answer = await bob.ok(
        "POST", "/keys/query", {"device_keys": {dead: [], alice.user_id: []}, "timeout": 2000}
    )
    assert list(answer["failures"]) == [dead.split(":", 1)[1]]
    assert alice.user_id in answer["device_keys"]
