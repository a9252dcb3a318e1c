"""Server-side key backup: versions, keys at all three levels, the better copy of a
session wins, etags move with the keys, and a stale version is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.e2ee_devices import Device

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


def session(first: int = 0, forwarded: int = 0, verified: bool = False, tag: str = "a") -> Any:
    return {
        "first_message_index": first,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ciphertext": tag, "ephemeral": "e", "mac": "m"},
    }


async def test_versions(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    bob = await Device.make(client, "bob")
    status, body = await alice.call("GET", "/room_keys/version")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    auth_data = {"public_key": "abc", "signatures": {}}
    first = await alice.ok(
        "POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": auth_data}
    )
    assert first == {"version": "1"}
    current = await alice.ok("GET", "/room_keys/version")
    assert current == {
        "algorithm": ALGORITHM,
        "auth_data": auth_data,
        "count": 0,
        "etag": "0",
        "version": "1",
    }
    # Another user's backups are separate.
    status, _ = await bob.call("GET", "/room_keys/version/1")
    assert status == 404

    await alice.ok(
        "PUT",
        "/room_keys/version/1",
        {"algorithm": ALGORITHM, "auth_data": {"public_key": "def"}, "version": "1"},
    )
    assert (await alice.ok("GET", "/room_keys/version/1"))["auth_data"] == {"public_key": "def"}
    bad_inputs: list[Any] = [
        {"algorithm": "other", "auth_data": {}},
        {"algorithm": ALGORITHM, "auth_data": {}, "version": "2"},
        {"algorithm": ALGORITHM, "auth_data": "x"},
    ]
    for bad in bad_inputs:
        status, _ = await alice.call("PUT", "/room_keys/version/1", bad)
        assert status == 400, bad
    status, _ = await alice.call(
        "PUT", "/room_keys/version/7", {"algorithm": ALGORITHM, "auth_data": {}}
    )
    assert status == 404
    status, _ = await alice.call("POST", "/room_keys/version", {"algorithm": ALGORITHM})
    assert status == 400

    second = await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})
    assert second == {"version": "2"}
    assert (await alice.ok("GET", "/room_keys/version"))["version"] == "2"
    await alice.ok("DELETE", "/room_keys/version/2")
    await alice.ok("DELETE", "/room_keys/version/2")  # already deleted: still fine
    assert (await alice.ok("GET", "/room_keys/version"))["version"] == "1"
    for path in ("/room_keys/version/2", "/room_keys/version/abc", "/room_keys/version/99"):
        status, _ = await alice.call("GET", path)
        assert status == 404, path
    status, _ = await alice.call("DELETE", "/room_keys/version/99")
    assert status == 404
    # Numbers are never reused.
    third = await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})
    assert third == {"version": "3"}


async def test_keys_at_every_level(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})

    result = await alice.ok(
        "PUT",
        "/room_keys/keys",
        {"rooms": {ROOM: {"sessions": {"s1": session(), "s2": session()}}}},
        version="1",
    )
    assert result == {"etag": "1", "count": 2}
    result = await alice.ok(
        "PUT", "/room_keys/keys/!other:test.local", {"sessions": {"s3": session()}}, version="1"
    )
    assert result == {"etag": "2", "count": 3}
    result = await alice.ok("PUT", f"/room_keys/keys/{ROOM}/s4", session(), version="1")
    assert result == {"etag": "3", "count": 4}

    everything = await alice.ok("GET", "/room_keys/keys", version="1")
    assert set(everything["rooms"]) == {ROOM, "!other:test.local"}
    assert set(everything["rooms"][ROOM]["sessions"]) == {"s1", "s2", "s4"}
    room = await alice.ok("GET", f"/room_keys/keys/{ROOM}", version="1")
    assert set(room["sessions"]) == {"s1", "s2", "s4"}
    assert await alice.ok("GET", f"/room_keys/keys/{ROOM}/s1", version="1") == session()
    assert await alice.ok("GET", "/room_keys/keys/!empty:test.local", version="1") == {
        "sessions": {}
    }
    status, _ = await alice.call("GET", f"/room_keys/keys/{ROOM}/nope", version="1")
    assert status == 404

    assert await alice.ok("DELETE", f"/room_keys/keys/{ROOM}/s1", version="1") == {
        "etag": "4",
        "count": 3,
    }
    assert await alice.ok("DELETE", f"/room_keys/keys/{ROOM}", version="1") == {
        "etag": "5",
        "count": 1,
    }
    assert await alice.ok("DELETE", "/room_keys/keys", version="1") == {"etag": "6", "count": 0}
    assert await alice.ok("GET", "/room_keys/keys", version="1") == {"rooms": {}}

    status, body = await alice.call("GET", "/room_keys/keys")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    bad_inputs: list[Any] = [
        {"rooms": []},
        {"rooms": {ROOM: []}},
        {"rooms": {ROOM: {"sessions": {"s": {"first_message_index": -1}}}}},
        {"rooms": {ROOM: {"sessions": {"s": {**session(), "is_verified": "yes"}}}}},
        {"rooms": {ROOM: {"sessions": {"s": {**session(), "session_data": "x"}}}}},
    ]
    for bad in bad_inputs:
        status, _ = await alice.call("PUT", "/room_keys/keys", bad, version="1")
        assert status == 400, bad


async def test_the_better_session_is_kept(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})
    path = f"/room_keys/keys/{ROOM}/s"

    async def put(data: Any) -> str:
        result = await alice.ok("PUT", path, data, version="1")
        return str(result["etag"])

    async def stored() -> str:
        return str((await alice.ok("GET", path, version="1"))["session_data"]["ciphertext"])

    await put(session(first=5, forwarded=2, tag="start"))
    etag = await put(session(first=6, forwarded=2, tag="worse index"))
    assert await stored() == "start"
    assert await put(session(first=5, forwarded=3, tag="more forwards")) == etag
    assert await stored() == "start"
    await put(session(first=5, forwarded=1, tag="fewer forwards"))
    assert await stored() == "fewer forwards"
    await put(session(first=2, forwarded=9, tag="lower index"))
    assert await stored() == "lower index"
    await put(session(first=9, forwarded=9, verified=True, tag="verified"))
    assert await stored() == "verified"
    await put(session(first=0, forwarded=0, verified=False, tag="unverified"))
    assert await stored() == "verified"


async def test_wrong_version(client: TestClient[Any, Any]) -> None:
    alice = await Device.make(client, "alice")
    status, _ = await alice.call("PUT", f"/room_keys/keys/{ROOM}/s", session(), version="1")
    assert status == 404
    await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})
    await alice.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": {}})
    for version in ("1", "x", "3"):
        status, body = await alice.call(
            "PUT", f"/room_keys/keys/{ROOM}/s", session(), version=version
        )
        assert status == 403, version
        assert body["errcode"] == "M_WRONG_ROOM_KEYS_VERSION"
        assert body["current_version"] == "2"
    status, _ = await alice.call("GET", "/room_keys/keys", version="9")
    assert status == 404
