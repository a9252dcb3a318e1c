"""Cross-signing keys and signatures: uploads are checked against the keys they must be
signed with, replacing keys needs re-authentication, and /keys/query serves the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.core.clock import now_ms
from homeserver.storage.e2ee import cross_signing as cross_signing_store
from tests.integration.conftest import auth_header, make_user, register_user
from tests.integration.e2ee_devices import Device, public, sign


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(open_registration=True, **{"rate_limits.enabled": False})


class CrossSigning:
    """A user's three cross-signing keys."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = nacl.signing.SigningKey.generate()
        self.self_signing = nacl.signing.SigningKey.generate()
        self.user_signing = nacl.signing.SigningKey.generate()

    def key_id(self, key: nacl.signing.SigningKey) -> str:
        return f"ed25519:{public(key)}"

    def key(self, usage: str, key: nacl.signing.SigningKey) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "user_id": self.user_id,
            "usage": [usage],
            "keys": {self.key_id(key): public(key)},
        }
        if usage != "master":
            sign(obj, self.user_id, self.key_id(self.master), self.master)
        return obj

    def body(self) -> dict[str, Any]:
        return {
            "master_key": self.key("master", self.master),
            "self_signing_key": self.key("self_signing", self.self_signing),
            "user_signing_key": self.key("user_signing", self.user_signing),
        }


async def registered(client: TestClient[Any, Any], name: str) -> Device:
    account = await register_user(client, name)
    return Device(client, account["user_id"], account["device_id"], account["access_token"])


async def test_upload_query_and_replace(client: TestClient[Any, Any]) -> None:
    alice = await registered(client, "alice")
    bob = await registered(client, "bob")
    keys = CrossSigning(alice.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", keys.body())
    # Repeating the same keys needs no re-authentication.
    await alice.ok("POST", "/keys/device_signing/upload", keys.body())

    mine = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert mine["master_keys"][alice.user_id]["keys"] == keys.body()["master_key"]["keys"]
    assert alice.user_id in mine["self_signing_keys"]
    assert alice.user_id in mine["user_signing_keys"]
    theirs = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert alice.user_id in theirs["master_keys"]
    assert alice.user_id in theirs["self_signing_keys"]
    assert theirs["user_signing_keys"] == {}

    # Replacing the keys asks for the password first.
    new = CrossSigning(alice.user_id)
    status, challenge = await alice.call("POST", "/keys/device_signing/upload", new.body())
    assert status == 401 and "session" in challenge
    body = new.body()
    body["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "secret pw",
        "session": challenge["session"],
    }
    await alice.ok("POST", "/keys/device_signing/upload", body)
    mine = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert mine["master_keys"][alice.user_id]["keys"] == new.body()["master_key"]["keys"]


ALLOW_PATH = "/_synapse/admin/v1/users/{}/_allow_cross_signing_replacement_without_uia"


async def test_admin_allows_replacement_without_uia(client: TestClient[Any, Any]) -> None:
    """Synapse's admin window: for ten minutes the user may replace their master key
    without re-authenticating; the replacement, or the window's end, closes it."""
    _, admin_token = await make_user(client, "root", admin=True)
    admin = auth_header(admin_token)
    alice = await registered(client, "alice")
    allow = ALLOW_PATH.format(alice.user_id)

    # No master key yet (and an unknown user has none): 404, as Synapse answers.
    for user_id in (alice.user_id, "@nobody:test.local"):
        resp = await client.post(ALLOW_PATH.format(user_id), headers=admin)
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"

    await alice.ok("POST", "/keys/device_signing/upload", CrossSigning(alice.user_id).body())
    # Without the admin's call, a replacement asks for re-authentication.
    status, challenge = await alice.call(
        "POST", "/keys/device_signing/upload", CrossSigning(alice.user_id).body()
    )
    assert status == 401 and challenge["flows"]

    before = now_ms()
    resp = await client.post(allow, headers=admin)
    assert resp.status == 200
    until = (await resp.json())["updatable_without_uia_before_ms"]
    assert before + 10 * 60 * 1000 <= until <= now_ms() + 10 * 60 * 1000
    replacement = CrossSigning(alice.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", replacement.body())
    mine = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert mine["master_keys"][alice.user_id]["keys"] == replacement.body()["master_key"]["keys"]

    # The replacement used the window up.
    status, challenge = await alice.call(
        "POST", "/keys/device_signing/upload", CrossSigning(alice.user_id).body()
    )
    assert status == 401 and challenge["flows"]

    # A window that has ended waives nothing.
    resp = await client.post(allow, headers=admin)
    assert resp.status == 200
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        ended = now_ms() - 1
        assert await cross_signing_store.open_master_replacement_window(conn, alice.user_id, ended)
    status, challenge = await alice.call(
        "POST", "/keys/device_signing/upload", CrossSigning(alice.user_id).body()
    )
    assert status == 401 and challenge["flows"]

    # Only an admin opens it.
    resp = await client.post(allow, headers=alice.headers)
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


async def test_bad_cross_signing_uploads(client: TestClient[Any, Any]) -> None:
    alice = await registered(client, "alice")
    keys = CrossSigning(alice.user_id)

    # No master key anywhere.
    body = keys.body()
    del body["master_key"]
    status, result = await alice.call("POST", "/keys/device_signing/upload", body)
    assert status == 400 and result["errcode"] == "M_MISSING_PARAM"

    # Self-signing key not signed by the master key.
    body = keys.body()
    body["self_signing_key"].pop("signatures")
    status, result = await alice.call("POST", "/keys/device_signing/upload", body)
    assert status == 400 and result["errcode"] == "M_INVALID_SIGNATURE"

    # Someone else's key, wrong usage, key named wrongly, not an object.
    for field, change in (
        ("master_key", {"user_id": "@bob:test.local"}),
        ("master_key", {"usage": ["self_signing"]}),
        ("master_key", {"keys": {"ed25519:abc": "def"}}),
    ):
        body = keys.body()
        body[field].update(change)
        status, result = await alice.call("POST", "/keys/device_signing/upload", body)
        assert status == 400, (field, change)
    status, _ = await alice.call("POST", "/keys/device_signing/upload", {"master_key": "x"})
    assert status == 400


async def test_signatures_upload(client: TestClient[Any, Any]) -> None:
    alice = await registered(client, "alice")
    bob = await registered(client, "bob")
    await alice.publish()
    await bob.publish()
    a_keys = CrossSigning(alice.user_id)
    b_keys = CrossSigning(bob.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", a_keys.body())
    await bob.ok("POST", "/keys/device_signing/upload", b_keys.body())

    # Alice's self-signing key signs her device; her device signs her master key;
    # her user-signing key signs Bob's master key.
    device = alice.device_keys()
    sign(device, alice.user_id, a_keys.key_id(a_keys.self_signing), a_keys.self_signing)
    master = a_keys.key("master", a_keys.master)
    sign(master, alice.user_id, alice.key_id, alice.key)
    bobs_master = b_keys.key("master", b_keys.master)
    sign(bobs_master, alice.user_id, a_keys.key_id(a_keys.user_signing), a_keys.user_signing)
    # And two bad ones: a forged device signature, and Bob's device signed by Alice.
    forged = alice.device_keys()
    forged["signatures"][alice.user_id][a_keys.key_id(a_keys.self_signing)] = "Zm9yZ2Vk" * 11
    bobs_device = bob.device_keys()
    sign(bobs_device, alice.user_id, a_keys.key_id(a_keys.user_signing), a_keys.user_signing)

    result = await alice.ok(
        "POST",
        "/keys/signatures/upload",
        {
            alice.user_id: {alice.device_id: device, public(a_keys.master): master},
            bob.user_id: {public(b_keys.master): bobs_master},
        },
    )
    assert result == {"failures": {}}
    result = await alice.ok(
        "POST",
        "/keys/signatures/upload",
        {
            alice.user_id: {alice.device_id: forged, "NOSUCHDEVICE": device},
            bob.user_id: {bob.device_id: bobs_device},
        },
    )
    failures = result["failures"]
    assert failures[alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert failures[alice.user_id]["NOSUCHDEVICE"]["errcode"] == "M_NOT_FOUND"
    assert bob.device_id in failures[bob.user_id]

    # Everyone sees the self-signing signature on Alice's device and her device's
    # signature on her master key; only Alice sees her signature on Bob's master key.
    ssk_id = a_keys.key_id(a_keys.self_signing)
    for viewer in (alice, bob):
        seen = await viewer.ok(
            "POST", "/keys/query", {"device_keys": {alice.user_id: [], bob.user_id: []}}
        )
        device_sigs = seen["device_keys"][alice.user_id][alice.device_id]["signatures"]
        assert ssk_id in device_sigs[alice.user_id]
        assert alice.key_id in seen["master_keys"][alice.user_id]["signatures"][alice.user_id]
        bob_master_sigs = seen["master_keys"][bob.user_id].get("signatures", {})
        assert (alice.user_id in bob_master_sigs) == (viewer is alice)


async def test_login_cannot_claim_a_cross_signing_key_id_as_device_id(
    client: TestClient[Any, Any],
) -> None:
    """The spec forbids it: signatures name devices and cross-signing keys alike, by
    `ed25519:<id>`, so such a device would be confused with the key."""
    alice = await registered(client, "alice")
    keys = CrossSigning(alice.user_id)
    await alice.ok("POST", "/keys/device_signing/upload", keys.body())
    for key in (keys.master, keys.self_signing, keys.user_signing):
        for device_id in (public(key), keys.key_id(key)):
            resp = await client.post(
                "/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "alice"},
                    "password": "secret pw",
                    "device_id": device_id,
                },
            )
            body = await resp.json()
            assert (resp.status, body["errcode"]) == (403, "M_FORBIDDEN"), device_id
    devices = await alice.ok("GET", "/devices")
    assert [d["device_id"] for d in devices["devices"]] == [alice.device_id]
