"""Devices over HTTP: listing, renaming, last-seen tracking, and deleting with
user-interactive auth (bound to the operation and user it was started for)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.services.accounts.devices import SeenThrottle
from tests.integration.conftest import CLIENT_V3, auth_header, login_user, register_user


def password_auth(session: str | None, password: str = "pw", user: str = "alice") -> Any:
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


async def test_list_get_rename(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(
        open_client, "alice", "pw", device_id="A1", initial_device_display_name="Phone"
    )
    headers = {**auth_header(alice["access_token"]), "User-Agent": "test-agent/1"}
    resp = await open_client.get(f"{CLIENT_V3}/devices", headers=headers)
    [device] = (await resp.json())["devices"]
    assert device["device_id"] == "A1"
    assert device["display_name"] == "Phone"
    assert device["last_seen_ip"] == "127.0.0.1"
    assert isinstance(device["last_seen_ts"], int)
    # A device that has not made a request yet has not been seen.
    await login_user(open_client, "alice", "pw", device_id="A2")
    resp = await open_client.get(f"{CLIENT_V3}/devices/A2", headers=headers)
    assert await resp.json() == {
        "device_id": "A2",
        "display_name": None,
        "last_seen_ts": None,
        "last_seen_ip": None,
    }

    resp = await open_client.put(
        f"{CLIENT_V3}/devices/A1", json={"display_name": "Work phone"}, headers=headers
    )
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(f"{CLIENT_V3}/devices/A1", headers=headers)
    assert (await resp.json())["display_name"] == "Work phone"
    resp = await open_client.get("/_matrix/client/r0/devices/A1", headers=headers)
    assert resp.status == 200

    for bad in ({"display_name": 5}, {"display_name": "x" * 600}):
        resp = await open_client.put(f"{CLIENT_V3}/devices/A1", json=bad, headers=headers)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    resp = await open_client.put(f"{CLIENT_V3}/devices/A1", data=b"[", headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_NOT_JSON")
    resp = await open_client.get(f"{CLIENT_V3}/devices/NOPE", headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")
    resp = await open_client.put(
        f"{CLIENT_V3}/devices/NOPE", json={"display_name": "x"}, headers=headers
    )
    assert resp.status == 404
    resp = await open_client.get(f"{CLIENT_V3}/devices")
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_other_users_devices_are_invisible(open_client: TestClient[Any, Any]) -> None:
    await register_user(open_client, "alice", "pw", device_id="ALICEDEV")
    bob = await register_user(open_client, "bob", "pw")
    headers = auth_header(bob["access_token"])
    resp = await open_client.get(f"{CLIENT_V3}/devices/ALICEDEV", headers=headers)
    assert resp.status == 404
    resp = await open_client.put(
        f"{CLIENT_V3}/devices/ALICEDEV", json={"display_name": "x"}, headers=headers
    )
    assert resp.status == 404


async def test_delete_device_with_reauth(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw")
    other = await login_user(open_client, "alice", "pw", device_id="OTHER")
    headers = auth_header(alice["access_token"])
    url = f"{CLIENT_V3}/devices/OTHER"

    resp = await open_client.delete(url, headers=headers)
    assert resp.status == 401
    challenge = await resp.json()
    assert challenge["flows"] == [{"stages": ["m.login.password"]}]
    session = challenge["session"]

    resp = await open_client.delete(
        url, json={"auth": password_auth(session, "wrong")}, headers=headers
    )
    assert resp.status == 401
    failed = await resp.json()
    assert failed["errcode"] == "M_FORBIDDEN"
    assert failed["session"] == session and failed["completed"] == []

    # The session was started for deleting OTHER: it cannot delete the caller's device.
    resp = await open_client.delete(
        f"{CLIENT_V3}/devices/{alice['device_id']}",
        json={"auth": password_auth(session)},
        headers=headers,
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")
    # Nor can another user authenticate it with their own password.
    bob = await register_user(open_client, "bob", "bobpw")
    resp = await open_client.delete(
        url, json={"auth": password_auth(None, "bobpw", "bob")}, headers=headers
    )
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_FORBIDDEN")
    # Nor is it bob's to use: OTHER is not his device, so his request deletes nothing.
    resp = await open_client.delete(
        url, json={"auth": password_auth(session)}, headers=auth_header(bob["access_token"])
    )
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(url, headers=headers)
    assert resp.status == 200

    resp = await open_client.delete(url, json={"auth": password_auth(session)}, headers=headers)
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(other["access_token"])
    )
    assert resp.status == 401
    resp = await open_client.get(url, headers=headers)
    assert resp.status == 404


async def test_delete_devices(open_client: TestClient[Any, Any]) -> None:
    alice = await register_user(open_client, "alice", "pw", device_id="MAIN")
    for device_id in ("D1", "D2", "D3"):
        await login_user(open_client, "alice", "pw", device_id=device_id)
    headers = auth_header(alice["access_token"])
    url = f"{CLIENT_V3}/delete_devices"
    for bad in ({}, {"devices": "D1"}, {"devices": [1]}):
        resp = await open_client.post(url, json=bad, headers=headers)
        assert (resp.status, (await resp.json())["errcode"]) == (400, "M_BAD_JSON")
    body: dict[str, Any] = {"devices": ["D1", "D2", "UNKNOWN"]}
    resp = await open_client.post(url, json=body, headers=headers)
    session = (await resp.json())["session"]
    # The session binds the endpoint, not the body: the list of the final request is
    # the one deleted.
    resp = await open_client.post(
        url, json={"devices": ["D1", "D2"], "auth": password_auth(session)}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    resp = await open_client.get(f"{CLIENT_V3}/devices", headers=headers)
    assert [d["device_id"] for d in (await resp.json())["devices"]] == ["D3", "MAIN"]


async def test_deleting_a_device_that_is_not_yours(open_client: TestClient[Any, Any]) -> None:
    """Another user's device is, to the requester, one they do not have: the spec's 200
    ("had been removed previously") at once, with no UIA round and nothing deleted."""
    alice = await register_user(open_client, "alice", "pw", device_id="ALICEDEV")
    bob = await register_user(open_client, "bob", "bobpw", device_id="BOBDEV")
    bob_headers = auth_header(bob["access_token"])
    for method, url, body in (
        ("DELETE", f"{CLIENT_V3}/devices/ALICEDEV", None),
        ("DELETE", f"{CLIENT_V3}/devices/UNKNOWN", None),
        ("POST", f"{CLIENT_V3}/delete_devices", {"devices": ["ALICEDEV", "UNKNOWN"]}),
    ):
        resp = await open_client.request(method, url, json=body, headers=bob_headers)
        assert (resp.status, await resp.json()) == (200, {}), url
    resp = await open_client.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(alice["access_token"])
    )
    assert resp.status == 200
    # A list holding one of bob's own devices still needs him to re-authenticate, and
    # deletes only his.
    url = f"{CLIENT_V3}/delete_devices"
    body = {"devices": ["ALICEDEV", "BOBDEV"]}
    resp = await open_client.post(url, json=body, headers=bob_headers)
    assert resp.status == 401
    session = (await resp.json())["session"]
    resp = await open_client.post(
        url, json={**body, "auth": password_auth(session, "bobpw", "bob")}, headers=bob_headers
    )
    assert (resp.status, await resp.json()) == (200, {})
    resp = await open_client.get(f"{CLIENT_V3}/account/whoami", headers=bob_headers)
    assert resp.status == 401
    resp = await open_client.get(
        f"{CLIENT_V3}/devices/ALICEDEV", headers=auth_header(alice["access_token"])
    )
    assert resp.status == 200


def test_seen_throttle_writes_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("homeserver.services.accounts.devices.time.monotonic", lambda: clock[0])
    throttle = SeenThrottle()
    assert throttle.due(1)
    assert not throttle.due(1)
    assert throttle.due(2)
    clock[0] += 61
    assert throttle.due(1)
