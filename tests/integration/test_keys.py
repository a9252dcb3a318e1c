"""/keys/upload, /keys/query, /keys/claim and /keys/changes: signatures are checked,
published device keys never change, and a one-time key is handed out once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.e2ee_devices import Device, sign


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def test_upload_and_query_device_keys(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    counts = await alice.publish(one_time=5)
    assert counts == {"one_time_key_counts": {"signed_curve25519": 5}}
    await alice.ok("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's phone"})

    result = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    keys = result["device_keys"][alice.user_id][alice.device_id]
    assert keys["keys"] == alice.device_keys()["keys"]
    assert keys["signatures"] == alice.device_keys()["signatures"]
    assert keys["unsigned"] == {"device_display_name": "Alice's phone"}
    assert result["failures"] == {}

    # Asking for a named device, an unknown device, an unknown user, a remote user.
    result = await bob.ok(
        "POST",
        "/keys/query",
        {
            "device_keys": {
                alice.user_id: [alice.device_id, "NOPE"],
                "@nobody:test.local": [],
                "@carol:elsewhere.example": [],
            },
            "timeout": 1000,
        },
    )
    assert list(result["device_keys"][alice.user_id]) == [alice.device_id]
    assert result["device_keys"]["@nobody:test.local"] == {}
    assert "elsewhere.example" in result["failures"]


async def test_reupload_same_keys_is_accepted_but_changed_keys_are_not(
    client: TestClient[Any, Any],
) -> None:
    alice = await Device.make(client, "alice")
    await alice.publish()
    await alice.upload(device_keys=alice.device_keys())

    changed = alice.device_keys()
    changed["keys"][f"curve25519:{alice.device_id}"] = "c29tZXRoaW5nIGVsc2U"
    changed.pop("signatures")
    sign(changed, alice.user_id, alice.key_id, alice.key)
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": changed})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda keys: keys["keys"].update({"curve25519:TESTDEVICE": "dGFtcGVyZWQ"}),
        lambda keys: keys.update({"user_id": "@mallory:test.local"}),
        lambda keys: keys.update({"device_id": "OTHER"}),
        lambda keys: keys["keys"].pop("ed25519:TESTDEVICE"),
        lambda keys: keys.update({"keys": ["not", "an", "object"]}),
    ],
)
async def test_bad_device_keys_are_rejected(
    client: TestClient[Any, Any], tamper: Callable[[dict[str, Any]], Any]
) -> None:
    alice = await Device.make(client, "alice")
    keys = alice.device_keys()
    tamper(keys)
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": keys})
    assert status == 400, body
    assert body["errcode"] in ("M_INVALID_PARAM", "M_INVALID_SIGNATURE")
    result = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert result["device_keys"][alice.user_id] == {}


async def test_device_keys_without_a_self_signature_are_accepted(
    client: TestClient[Any, Any],
) -> None:
    """As Synapse does: clients verify device signatures themselves."""
    alice = await Device.make(client, "alice")
    keys = alice.device_keys()
    keys.pop("signatures")
    await alice.upload(device_keys=keys)
    result = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    stored = result["device_keys"][alice.user_id][alice.device_id]
    assert stored["keys"] == keys["keys"] and "signatures" not in stored


async def test_claim_hands_out_the_oldest_one_time_key_first(
    client: TestClient[Any, Any],
) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    await alice.publish()
    # Key ids sorting against the upload order: the first upload's sort last.
    first = {
        f"signed_curve25519:Z{i}": key for i, key in enumerate(alice.one_time_keys(2).values())
    }
    second = {
        f"signed_curve25519:A{i}": key for i, key in enumerate(alice.one_time_keys(2).values())
    }
    await alice.upload(one_time_keys=first)
    await alice.upload(one_time_keys=second)
    claimed: list[str] = []
    for _ in range(4):
        result = await bob.ok(
            "POST",
            "/keys/claim",
            {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
        )
        [key_id] = result["one_time_keys"][alice.user_id][alice.device_id]
        claimed.append(key_id)
    assert claimed[:2] == sorted(first) and sorted(claimed[2:]) == sorted(second)


async def test_bad_one_time_keys_are_rejected(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    # Signed keys before the device keys they are signed with.
    status, _ = await alice.call("POST", "/keys/upload", {"one_time_keys": alice.one_time_keys(1)})
    assert status == 400
    await alice.publish()
    forged = alice.one_time_keys(1)
    for key in forged.values():
        key["key"] = "Zm9yZ2Vk"
    status, body = await alice.call("POST", "/keys/upload", {"one_time_keys": forged})
    assert status == 400 and body["errcode"] == "M_INVALID_SIGNATURE"
    bad_inputs: list[Any] = [{"nocolon": "abc"}, {"signed_curve25519:X": 5}, []]
    for bad in bad_inputs:
        status, body = await alice.call("POST", "/keys/upload", {"one_time_keys": bad})
        assert status == 400, bad

    # The same key id again with other content is refused; the same key is fine.
    keys = alice.one_time_keys(1)
    await alice.upload(one_time_keys=keys)
    await alice.upload(one_time_keys=keys)
    other = copy.deepcopy(keys)
    for key in other.values():
        key["key"] = "b3RoZXI"
        key.pop("signatures")
        sign(key, alice.user_id, alice.key_id, alice.key)
    status, _ = await alice.call("POST", "/keys/upload", {"one_time_keys": other})
    assert status == 400
    assert (await alice.upload())["one_time_key_counts"]["signed_curve25519"] == 1


async def test_claim_uses_one_time_keys_then_the_fallback_key(
    client: TestClient[Any, Any],
) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    uploaded = alice.one_time_keys(2)
    fallback = alice.one_time_keys(1, fallback=True)
    await alice.upload(
        device_keys=alice.device_keys(), one_time_keys=uploaded, fallback_keys=fallback
    )
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    seen = []
    for _ in range(2):
        result = await bob.ok("POST", "/keys/claim", request)
        [(key_id, key)] = result["one_time_keys"][alice.user_id][alice.device_id].items()
        assert uploaded[key_id] == key
        seen.append(key_id)
    assert sorted(seen) == sorted(uploaded)

    hs = client.app[HOMESERVER]
    assert await hs.e2ee_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == [
        "signed_curve25519"
    ]
    for _ in range(2):
        result = await bob.ok("POST", "/keys/claim", request)
        assert result["one_time_keys"][alice.user_id][alice.device_id] == fallback
    assert await hs.e2ee_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []
    assert await hs.e2ee_keys.one_time_key_counts(alice.user_id, alice.device_id) == {
        "signed_curve25519": 0
    }

    # A new fallback key is unused again; re-uploading the used one keeps it used.
    await alice.upload(fallback_keys=fallback)
    assert await hs.e2ee_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []
    await alice.upload(fallback_keys=alice.one_time_keys(1, fallback=True))
    assert await hs.e2ee_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == [
        "signed_curve25519"
    ]

    # Unknown devices, remote users.
    result = await bob.ok(
        "POST",
        "/keys/claim",
        {
            "one_time_keys": {
                alice.user_id: {"NOPE": "signed_curve25519"},
                "@carol:elsewhere.example": {"X": "signed_curve25519"},
            }
        },
    )
    assert result["one_time_keys"] == {}
    assert "elsewhere.example" in result["failures"]
    status, _ = await bob.call("POST", "/keys/claim", {"one_time_keys": {alice.user_id: "x"}})
    assert status == 400


async def test_concurrent_claims_never_share_a_key(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    await alice.publish(one_time=10)
    claimers = [await Device.make(client, f"claimer{i}") for i in range(20)]
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    results = await asyncio.gather(*(c.ok("POST", "/keys/claim", request) for c in claimers))
    claimed = [
        key_id
        for result in results
        for key_id in result["one_time_keys"].get(alice.user_id, {}).get(alice.device_id, {})
    ]
    assert len(claimed) == 10
    assert len(set(claimed)) == 10


async def test_keys_changes_and_query_validation(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    status, body = await alice.call("GET", "/keys/changes", None, **{"from": "s0_0_0_0_0_0_0"})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await alice.call("GET", "/keys/changes", None, **{"from": "x", "to": "y"})
    assert status == 400
    await alice.publish()
    result = await alice.ok(
        "GET", "/keys/changes", None, **{"from": "s0_0_0_0_0_0_0", "to": "s0_0_0_0_0_99_0"}
    )
    assert result == {"changed": [alice.user_id], "left": []}

    bad_inputs: list[Any] = [
        {},
        {"device_keys": []},
        {"device_keys": {alice.user_id: "x"}},
        {"device_keys": {alice.user_id: {"DEVICE": {}}}},
    ]
    for bad in bad_inputs:
        status, body = await alice.call("POST", "/keys/query", bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    for bad in [{}, {"one_time_keys": []}, {"one_time_keys": {alice.user_id: ["DEVICE"]}}]:
        status, body = await alice.call("POST", "/keys/claim", bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    status, _ = await alice.call("POST", "/keys/query", {"device_keys": {"nobody": []}})
    assert status == 400


async def test_encrypted_rooms_and_events_pass_through(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    encryption = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604800000}
    room = (
        await alice.ok(
            "POST",
            "/createRoom",
            {
                "preset": "private_chat",
                "invite": [bob.user_id],
                "initial_state": [
                    {"type": "m.room.encryption", "state_key": "", "content": encryption}
                ],
            },
        )
    )["room_id"]
    await bob.ok("POST", f"/rooms/{room}/join")
    assert await bob.ok("GET", f"/rooms/{room}/state/m.room.encryption") == encryption

    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg2yyOwAtHaZTwyNg37af",
        "device_id": alice.device_id,
        "sender_key": alice.curve25519,
        "session_id": "SESSIONID",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
    }
    event_id = (await alice.ok("PUT", f"/rooms/{room}/send/m.room.encrypted/t1", content))[
        "event_id"
    ]
    event = await bob.ok("GET", f"/rooms/{room}/event/{event_id}")
    assert event["type"] == "m.room.encrypted"
    assert event["content"] == content


async def test_nul_characters_are_refused_not_fatal(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    await alice.publish()
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/keys/upload", {"one_time_keys": {"curve25519:\u0000": "abc"}}),
        ("POST", "/keys/upload", {"fallback_keys": {"curve25519:\u0000": "abc"}}),
        ("POST", "/keys/query", {"device_keys": {alice.user_id: ["\u0000"]}}),
        ("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {"\u0000": "x"}}}),
        ("POST", "/keys/signatures/upload", {alice.user_id: {"\u0000": {}}}),
        ("POST", "/keys/device_signing/upload", {"master_key": {"user_id": "\u0000"}}),
        ("POST", "/room_keys/version", {"algorithm": "\u0000", "auth_data": {}}),
    ]
    for method, path, body in requests:
        status, result = await alice.call(method, path, body)
        assert status == 400, (path, result)
    await alice.ok("POST", "/room_keys/version", {"algorithm": "a", "auth_data": {}})
    status, _ = await alice.call("GET", "/room_keys/keys/%00/%00", version="1")
    assert status == 400
