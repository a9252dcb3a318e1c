"""Simplified sliding sync extensions: to-device (deleted once acknowledged), e2ee,
account data, receipts and typing, scoped by the lists and rooms the client names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.e2ee_devices import Device
from tests.integration.sliding_sync_helpers import Client, User, one_list


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def pair(client: Client) -> tuple[Device, User, Device, User]:
    alice_device = await Device.make(client, "alice")
    bob_device = await Device.make(client, "bob")
    alice = User(client, alice_device.user_id, "")
    alice.headers = alice_device.headers
    bob = User(client, bob_device.user_id, "")
    bob.headers = bob_device.headers
    return alice_device, alice, bob_device, bob


def enabled(*names: str, **options: Any) -> dict[str, Any]:
    return {"extensions": {name: {"enabled": True, **options} for name in names}}


async def test_to_device_messages_stay_until_acknowledged(client: Client) -> None:
    alice_device, alice, _, bob = await pair(client)
    for n in range(2):
        await bob.call(
            "PUT",
            f"/sendToDevice/m.test/txn{n}",
            {"messages": {alice.user_id: {alice_device.device_id: {"n": n}}}},
        )
    body = enabled("to_device")
    first = await alice.ss(body)
    events = first["extensions"]["to_device"]["events"]
    assert [e["content"]["n"] for e in events] == [0, 1]
    assert events[0]["sender"] == bob.user_id
    since = first["extensions"]["to_device"]["next_batch"]
    # Not acknowledged yet (the answer may have been lost): sent again.
    again = await alice.ss(body)
    assert len(again["extensions"]["to_device"]["events"]) == 2
    acked = await alice.ss(enabled("to_device", since=since))
    assert acked["extensions"]["to_device"]["events"] == []
    assert acked["extensions"]["to_device"]["next_batch"] == since
    gone = await alice.ss(body)
    assert gone["extensions"]["to_device"]["events"] == []
    bad = await alice.ss(enabled("to_device", since="nope"), status=400)
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_to_device_wakes_a_long_poll(client: Client) -> None:
    _, alice, _, bob = await pair(client)
    body = enabled("to_device")
    first = await alice.ss(body)
    since = first["extensions"]["to_device"]["next_batch"]
    waiting = asyncio.create_task(alice.next(enabled("to_device", since=since), timeout_ms=20_000))
    await asyncio.sleep(0.3)
    await bob.call(
        "PUT",
        "/sendToDevice/m.room_key_request/w1",
        {"messages": {alice.user_id: {"*": {"hello": True}}}},
    )
    answer = await asyncio.wait_for(waiting, 10)
    assert [e["content"] for e in answer["extensions"]["to_device"]["events"]] == [{"hello": True}]


async def test_e2ee_counts_and_device_list_changes(client: Client) -> None:
    alice_device, alice, bob_device, bob = await pair(client)
    await alice_device.publish(one_time=3)
    await alice_device.upload(fallback_keys=alice_device.one_time_keys(1, fallback=True))
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    body = {**one_list(), **enabled("e2ee")}
    first = await alice.ss(body)
    e2ee = first["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"]["signed_curve25519"] == 3
    assert e2ee["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert "device_lists" not in e2ee
    await bob_device.publish()
    answer = await alice.next(body)
    assert bob.user_id in answer["extensions"]["e2ee"]["device_lists"]["changed"]
    await bob.call("POST", f"/rooms/{room_id}/leave", {})
    answer = await alice.next(body)
    assert answer["extensions"]["e2ee"]["device_lists"]["left"] == [bob.user_id]


async def test_account_data_receipts_and_typing_follow_the_windows(client: Client) -> None:
    _, alice, _, bob = await pair(client)
    outside = await alice.create_room(preset="public_chat")
    inside = await alice.create_room(preset="public_chat")
    for room_id in (outside, inside):
        await bob.join(room_id)
        await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.x", {"a": 1})
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/m.global", {"g": 1})
    body = {**one_list(end=0), **enabled("account_data", "receipts", "typing")}
    first = await alice.ss(body)
    assert first["lists"]["all"]["ops"][0]["room_ids"] == [inside]
    data = first["extensions"]["account_data"]
    global_types = {e["type"] for e in data["global"]}
    assert {"m.global", "m.push_rules"} <= global_types
    assert set(data["rooms"]) == {inside}
    assert data["rooms"][inside] == [{"type": "m.x", "content": {"a": 1}}]

    event_id = await alice.send(inside, "read me")
    await alice.next(body)
    await bob.call("POST", f"/rooms/{inside}/receipt/m.read/{event_id}", {})
    answer = await alice.next(body)
    receipts = answer["extensions"]["receipts"]["rooms"]
    assert set(receipts) == {inside}
    assert receipts[inside]["type"] == "m.receipt"
    assert bob.user_id in receipts[inside]["content"][event_id]["m.read"]

    # A room sent from nothing carries the receipts of its timeline (limit 1 here).
    fresh = await alice.ss(body, pos=None)
    assert (
        bob.user_id
        in fresh["extensions"]["receipts"]["rooms"][inside]["content"][event_id]["m.read"]
    )
    await alice.send(inside, "newer")
    fresh = await alice.ss(body, pos=None)
    assert inside not in fresh["extensions"]["receipts"]["rooms"]

    waiting = asyncio.create_task(alice.next(body, timeout_ms=20_000))
    await asyncio.sleep(0.3)
    await bob.call(
        "PUT", f"/rooms/{inside}/typing/{bob.user_id}", {"typing": True, "timeout": 30000}
    )
    answer = await asyncio.wait_for(waiting, 10)
    typing = answer["extensions"]["typing"]["rooms"]
    assert typing[inside] == {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}

    await bob.call(
        "PUT", f"/rooms/{outside}/typing/{bob.user_id}", {"typing": True, "timeout": 30000}
    )
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{outside}/account_data/m.x", {"a": 2})
    answer = await alice.next(body)
    assert outside not in answer["extensions"]["typing"]["rooms"]
    assert outside not in answer["extensions"]["account_data"]["rooms"]
    # An extension scoped to no list and no room says nothing of rooms.
    scoped = {**one_list(end=0), **enabled("account_data", lists=[], rooms=[])}
    none = await alice.ss(scoped)
    assert none["extensions"]["account_data"]["rooms"] == {}
