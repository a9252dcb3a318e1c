"""Profiles over HTTP: public reads, owner-only writes, field checks, rate limiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user

Client = TestClient[Any, Any]


async def _error(resp: Any, status: int, errcode: str) -> None:
    assert resp.status == status, await resp.text()
    assert (await resp.json())["errcode"] == errcode


async def test_set_and_read_profile(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    resp = await client.get(f"{CLIENT_V3}/profile/{alice}")
    assert resp.status == 200
    assert await resp.json() == {}
    resp = await client.put(
        f"{CLIENT_V3}/profile/{alice}/displayname",
        json={"displayname": "Alice"},
        headers=auth_header(token),
    )
    assert resp.status == 200 and await resp.json() == {}
    resp = await client.put(
        f"{CLIENT_V3}/profile/{alice}/avatar_url",
        json={"avatar_url": "mxc://test.local/abc123"},
        headers=auth_header(token),
    )
    assert resp.status == 200
    # Reads need no access token.
    resp = await client.get(f"{CLIENT_V3}/profile/{alice}")
    assert await resp.json() == {"displayname": "Alice", "avatar_url": "mxc://test.local/abc123"}
    resp = await client.get(f"{CLIENT_V3}/profile/{alice}/displayname")
    assert await resp.json() == {"displayname": "Alice"}
    resp = await client.get(f"/_matrix/client/r0/profile/{alice}/avatar_url")
    assert await resp.json() == {"avatar_url": "mxc://test.local/abc123"}
    # Clients percent-encode the user id.
    resp = await client.get(f"{CLIENT_V3}/profile/%40alice%3Atest.local/displayname")
    assert await resp.json() == {"displayname": "Alice"}


async def test_clearing_fields(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    url = f"{CLIENT_V3}/profile/{alice}/displayname"
    await client.put(url, json={"displayname": "Alice"}, headers=auth_header(token))
    resp = await client.delete(url, headers=auth_header(token))
    assert resp.status == 200
    await _error(await client.get(url), 404, "M_NOT_FOUND")
    await client.put(url, json={"displayname": "Alice"}, headers=auth_header(token))
    resp = await client.put(url, json={"displayname": ""}, headers=auth_header(token))
    assert resp.status == 200
    await _error(await client.get(url), 404, "M_NOT_FOUND")
    resp = await client.put(
        f"{CLIENT_V3}/profile/{alice}/avatar_url",
        json={"avatar_url": ""},
        headers=auth_header(token),
    )
    assert resp.status == 200
    assert await (await client.get(f"{CLIENT_V3}/profile/{alice}")).json() == {}


async def test_unknown_users(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    for user in ("@nobody:test.local", "not-a-user-id"):
        await _error(await client.get(f"{CLIENT_V3}/profile/{user}"), 404, "M_NOT_FOUND")
        await _error(
            await client.get(f"{CLIENT_V3}/profile/{user}/displayname"), 404, "M_NOT_FOUND"
        )
    # A remote user's profile is asked of their server, which cannot be reached here.
    remote = "@someone:remote.example"
    await _error(await client.get(f"{CLIENT_V3}/profile/{remote}"), 502, "M_UNKNOWN")


async def test_only_the_owner_may_write(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, _ = await make_user(client, "alice")
    _, bob_token = await make_user(client, "bob")
    url = f"{CLIENT_V3}/profile/{alice}/displayname"
    resp = await client.put(url, json={"displayname": "Bob"}, headers=auth_header(bob_token))
    await _error(resp, 403, "M_FORBIDDEN")
    await _error(await client.delete(url, headers=auth_header(bob_token)), 403, "M_FORBIDDEN")
    resp = await client.put(url, json={"displayname": "x"})
    await _error(resp, 401, "M_MISSING_TOKEN")
    resp = await client.put(url, json={"displayname": "x"}, headers=auth_header("nope"))
    await _error(resp, 401, "M_UNKNOWN_TOKEN")


async def test_bad_values(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    name_url = f"{CLIENT_V3}/profile/{alice}/displayname"
    avatar_url = f"{CLIENT_V3}/profile/{alice}/avatar_url"
    await _error(await client.put(name_url, data=b"{not json", headers=headers), 400, "M_NOT_JSON")
    await _error(await client.put(name_url, json=["x"], headers=headers), 400, "M_BAD_JSON")
    await _error(
        await client.put(name_url, json={"displayname": 5}, headers=headers), 400, "M_BAD_JSON"
    )
    await _error(
        await client.put(name_url, json={"displayname": None}, headers=headers), 400, "M_BAD_JSON"
    )
    await _error(
        await client.put(name_url, json={"avatar_url": "x"}, headers=headers),
        400,
        "M_MISSING_PARAM",
    )
    resp = await client.put(name_url, json={"displayname": "x" * 257}, headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")
    resp = await client.put(name_url, json={"displayname": "a\x00b"}, headers=headers)
    await _error(resp, 400, "M_BAD_JSON")
    resp = await client.put(name_url, json={"displayname": "x" * 256}, headers=headers)
    assert resp.status == 200
    for bad in ("https://example.org/a.png", "mxc://test.local/", "mxc://test.local/a/b"):
        resp = await client.put(avatar_url, json={"avatar_url": bad}, headers=headers)
        await _error(resp, 400, "M_INVALID_PARAM")
    long_avatar = "mxc://test.local/" + "a" * 1000
    resp = await client.put(avatar_url, json={"avatar_url": long_avatar}, headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")


async def test_other_profile_keys(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    # A valid key we do not store: absent, and not settable (see m.profile_fields).
    url = f"{CLIENT_V3}/profile/{alice}/m.tz"
    await _error(await client.get(url), 404, "M_NOT_FOUND")
    resp = await client.put(url, json={"m.tz": "Europe/London"}, headers=headers)
    await _error(resp, 403, "M_FORBIDDEN")
    # Not a profile key at all.
    url = f"{CLIENT_V3}/profile/{alice}/Bad-Key"
    await _error(await client.get(url), 400, "M_INVALID_PARAM")
    await _error(
        await client.put(url, json={"Bad-Key": 1}, headers=headers), 400, "M_INVALID_PARAM"
    )
    url = f"{CLIENT_V3}/profile/{alice}/org.example.{'a' * 260}"
    await _error(await client.get(url), 400, "M_KEY_TOO_LARGE")


async def test_body_too_large(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(max_request_size=1024)
    alice, token = await make_user(client, "alice")
    resp = await client.put(
        f"{CLIENT_V3}/profile/{alice}/displayname",
        json={"displayname": "x" * 2000},
        headers=auth_header(token),
    )
    await _error(resp, 413, "M_TOO_LARGE")


async def test_profile_changes_are_rate_limited(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        **{"rate_limits.message.burst": 2, "rate_limits.message.per_second": 0.001}
    )
    alice, token = await make_user(client, "alice")
    admin, admin_token = await make_user(client, "admin", admin=True)
    url = f"{CLIENT_V3}/profile/{alice}/displayname"
    for name in ("one", "two"):
        resp = await client.put(url, json={"displayname": name}, headers=auth_header(token))
        assert resp.status == 200
    resp = await client.put(url, json={"displayname": "three"}, headers=auth_header(token))
    await _error(resp, 429, "M_LIMIT_EXCEEDED")
    body = await resp.json()
    assert body["retry_after_ms"] > 0
    assert int(resp.headers["Retry-After"]) >= 1
    # Nothing was stored by the refused request.
    resp = await client.get(url)
    assert await resp.json() == {"displayname": "two"}
    # Server admins are not limited.
    admin_url = f"{CLIENT_V3}/profile/{admin}/displayname"
    for n in range(5):
        resp = await client.put(
            admin_url, json={"displayname": f"a{n}"}, headers=auth_header(admin_token)
        )
        assert resp.status == 200


async def test_rate_limits_can_be_disabled(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        **{"rate_limits.enabled": False, "rate_limits.message.burst": 1}
    )
    alice, token = await make_user(client, "alice")
    url = f"{CLIENT_V3}/profile/{alice}/displayname"
    for n in range(3):
        resp = await client.put(url, json={"displayname": f"n{n}"}, headers=auth_header(token))
        assert resp.status == 200


async def test_profile_change_updates_member_events(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    room_a = await alice.create_room()
    room_b = await alice.create_room()
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice A."})
    for room_id in (room_a, room_b):
        status, member = await alice.get(f"/v3/rooms/{room_id}/state/m.room.member/{alice.user_id}")
        assert status == 200
        assert member == {"membership": "join", "displayname": "Alice A."}
    # Rooms created after the change start with the new name too.
    room_c = await alice.create_room()
    _, member = await alice.get(f"/v3/rooms/{room_c}/state/m.room.member/{alice.user_id}")
    assert member["displayname"] == "Alice A."
