"""Profiles over HTTP: public reads, owner-only writes, field checks, custom fields, the
size limit, rate limiting, and custom fields over federation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.remote.client import RequestFailed
from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user
from tests.integration.peers import PEER_CONFIG, free_port

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
    long_avatar = "mxc://test.local/" + "a" * 1000
    resp = await client.put(avatar_url, json={"avatar_url": long_avatar}, headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")


async def test_avatar_url_is_any_string(homeserver_client: Callable[..., Any]) -> None:
    """Like Synapse, an avatar_url need not be an mxc:// URI (clients send other
    strings, and "" to clear it); it must still be a string of bounded length."""
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    url = f"{CLIENT_V3}/profile/{alice}/avatar_url"
    for value in ("https://example.org/a.png", "mxc://test.local/", "mxc://test.local/a/b"):
        resp = await client.put(url, json={"avatar_url": value}, headers=headers)
        assert resp.status == 200, value
        assert await (await client.get(url)).json() == {"avatar_url": value}
    resp = await client.put(url, json={"avatar_url": ""}, headers=headers)
    assert resp.status == 200
    await _error(await client.get(url), 404, "M_NOT_FOUND")
    await _error(await client.put(url, json={"avatar_url": 5}, headers=headers), 400, "M_BAD_JSON")
    resp = await client.put(url, json={"avatar_url": "x" * 1001}, headers=headers)
    await _error(resp, 400, "M_INVALID_PARAM")


async def test_other_profile_keys(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    # Not a profile key at all.
    url = f"{CLIENT_V3}/profile/{alice}/Bad-Key"
    await _error(await client.get(url), 400, "M_INVALID_PARAM")
    await _error(
        await client.put(url, json={"Bad-Key": 1}, headers=headers), 400, "M_INVALID_PARAM"
    )
    await _error(await client.delete(url, headers=headers), 400, "M_INVALID_PARAM")
    # Custom keys need a namespace.
    url = f"{CLIENT_V3}/profile/{alice}/pronouns"
    await _error(
        await client.put(url, json={"pronouns": "she"}, headers=headers), 400, "M_INVALID_PARAM"
    )
    url = f"{CLIENT_V3}/profile/{alice}/org.example.{'a' * 260}"
    await _error(await client.get(url), 400, "M_KEY_TOO_LARGE")
    resp = await client.put(url, json={f"org.example.{'a' * 260}": 1}, headers=headers)
    await _error(resp, 400, "M_KEY_TOO_LARGE")


async def test_custom_fields(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    base = f"{CLIENT_V3}/profile/{alice}"
    await _error(await client.get(f"{base}/m.tz"), 404, "M_NOT_FOUND")
    job = {"title": "gardener", "since": 2019, "tags": ["roses", None]}
    for key, value in [
        ("m.tz", "Europe/London"),
        ("org.example.job", job),
        ("org.example.nothing", None),  # null is stored, not a deletion
        ("displayname", "Alice"),
    ]:
        resp = await client.put(f"{base}/{key}", json={key: value}, headers=headers)
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}
    resp = await client.get(f"{base}/org.example.job")
    assert resp.status == 200 and await resp.json() == {"org.example.job": job}
    resp = await client.get(f"{base}/org.example.nothing")
    assert resp.status == 200 and await resp.json() == {"org.example.nothing": None}
    resp = await client.get(base)
    assert await resp.json() == {
        "displayname": "Alice",
        "m.tz": "Europe/London",
        "org.example.job": job,
        "org.example.nothing": None,
    }
    # Replacing a value, then deleting it; deleting what is not there succeeds.
    resp = await client.put(f"{base}/m.tz", json={"m.tz": "Asia/Tokyo"}, headers=headers)
    assert resp.status == 200
    assert await (await client.get(f"{base}/m.tz")).json() == {"m.tz": "Asia/Tokyo"}
    assert (await client.delete(f"{base}/m.tz", headers=headers)).status == 200
    await _error(await client.get(f"{base}/m.tz"), 404, "M_NOT_FOUND")
    assert (await client.delete(f"{base}/org.example.never", headers=headers)).status == 200
    assert "m.tz" not in await (await client.get(base)).json()


async def test_custom_field_errors(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice, token = await make_user(client, "alice")
    _, bob_token = await make_user(client, "bob")
    headers = auth_header(token)
    url = f"{CLIENT_V3}/profile/{alice}/org.example.job"
    # Another user may neither set nor delete it.
    resp = await client.put(url, json={"org.example.job": "x"}, headers=auth_header(bob_token))
    await _error(resp, 403, "M_FORBIDDEN")
    assert (await client.put(url, json={"org.example.job": "mine"}, headers=headers)).status == 200
    await _error(await client.delete(url, headers=auth_header(bob_token)), 403, "M_FORBIDDEN")
    assert await (await client.get(url)).json() == {"org.example.job": "mine"}
    # The body must name the key of the URL.
    await _error(
        await client.put(url, json={"org.example.jbo": 1}, headers=headers), 400, "M_MISSING_PARAM"
    )
    await _error(await client.put(url, data=b"{nope", headers=headers), 400, "M_NOT_JSON")
    resp = await client.put(url, json={"org.example.job": "a\u0000b"}, headers=headers)
    await _error(resp, 400, "M_BAD_JSON")
    tz = f"{CLIENT_V3}/profile/{alice}/m.tz"
    await _error(await client.put(tz, json={"m.tz": 5}, headers=headers), 400, "M_BAD_JSON")
    # Classic fields keep their rules.
    name = f"{CLIENT_V3}/profile/{alice}/displayname"
    await _error(
        await client.put(name, json={"displayname": 5}, headers=headers), 400, "M_BAD_JSON"
    )
    # Nothing of the refused writes was stored.
    assert await (await client.get(f"{CLIENT_V3}/profile/{alice}")).json() == {
        "org.example.job": "mine"
    }


async def test_profile_size_limit(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    base = f"{CLIENT_V3}/profile/{alice}"
    big = "x" * 40_000
    resp = await client.put(f"{base}/org.example.a", json={"org.example.a": big}, headers=headers)
    assert resp.status == 200
    # A second big field would take the whole profile past 64 KiB.
    resp = await client.put(f"{base}/org.example.b", json={"org.example.b": big}, headers=headers)
    await _error(resp, 400, "M_PROFILE_TOO_LARGE")
    await _error(await client.get(f"{base}/org.example.b"), 404, "M_NOT_FOUND")
    resp = await client.put(f"{base}/displayname", json={"displayname": "A"}, headers=headers)
    assert resp.status == 200
    # Replacing a field counts its new size only.
    resp = await client.put(
        f"{base}/org.example.a", json={"org.example.a": "y" * 60_000}, headers=headers
    )
    assert resp.status == 200
    resp = await client.put(
        f"{base}/org.example.a", json={"org.example.a": "y" * 70_000}, headers=headers
    )
    await _error(resp, 400, "M_PROFILE_TOO_LARGE")
    # Room is made by deleting.
    assert (await client.delete(f"{base}/org.example.a", headers=headers)).status == 200
    resp = await client.put(f"{base}/org.example.b", json={"org.example.b": big}, headers=headers)
    assert resp.status == 200
    assert await (await client.get(base)).json() == {"displayname": "A", "org.example.b": big}


async def test_custom_fields_are_not_announced_in_rooms(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room()
    _, member = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{alice.user_id}")
    await alice.ok("PUT", f"/profile/{alice.user_id}/org.example.job", {"org.example.job": "x"})
    _, after = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{alice.user_id}")
    assert after == member
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Al"})
    _, after = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{alice.user_id}")
    assert after == {**member, "displayname": "Al"}


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


async def _peer(homeserver_client: Callable[..., Any]) -> Client:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    return client


async def test_custom_fields_over_federation(homeserver_client: Callable[..., Any]) -> None:
    here, there = await _peer(homeserver_client), await _peer(homeserver_client)
    alice = await RoomUser.make(here, "alice")
    bob = await RoomUser.make(there, "bob")
    job = {"title": "baker"}
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Bob"})
    await bob.ok("PUT", f"/profile/{bob.user_id}/org.example.job", {"org.example.job": job})
    await bob.ok("PUT", f"/profile/{bob.user_id}/m.tz", {"m.tz": "Europe/Paris"})
    everything = {"displayname": "Bob", "org.example.job": job, "m.tz": "Europe/Paris"}

    # The query endpoint, whole and by `field`.
    hs = here.app[HOMESERVER]
    query = "/_matrix/federation/v1/query/profile"
    server = there.app[HOMESERVER].server_name
    assert await hs.remote_client.get_json(server, query, {"user_id": bob.user_id}) == (everything)
    answer = await hs.remote_client.get_json(
        server, query, {"user_id": bob.user_id, "field": "org.example.job"}
    )
    assert answer == {"org.example.job": job}
    with pytest.raises(RequestFailed) as missing:
        await hs.remote_client.get_json(
            server, query, {"user_id": bob.user_id, "field": "org.example.none"}
        )
    assert missing.value.status == 404

    # A client of the other server sees them through its own server.
    status, body = await alice.get(f"/v3/profile/{bob.user_id}")
    assert (status, body) == (200, everything)
    status, body = await alice.get(f"/v3/profile/{bob.user_id}/m.tz")
    assert (status, body) == (200, {"m.tz": "Europe/Paris"})
    status, body = await alice.get(f"/v3/profile/{bob.user_id}/org.example.none")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Nobody changes a remote user's profile from here.
    resp = await here.put(
        f"{CLIENT_V3}/profile/{bob.user_id}/m.tz", json={"m.tz": "UTC"}, headers=alice.headers
    )
    await _error(resp, 403, "M_FORBIDDEN")
