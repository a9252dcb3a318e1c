"""Uploading and downloading filters over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import CLIENT_V3, auth_header, make_user

FILTER = {
    "room": {
        "state": {"types": ["m.room.*"], "lazy_load_members": True},
        "timeline": {"limit": 10, "not_senders": ["@spam:example.org"]},
        "include_leave": False,
    },
    "presence": {"not_types": ["*"]},
    "event_fields": ["type", "content.body"],
    "event_format": "client",
    "org.example.unknown": 1,
}


async def _error(resp: Any, status: int, errcode: str) -> None:
    assert resp.status == status, await resp.text()
    assert (await resp.json())["errcode"] == errcode


async def test_upload_and_download(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    headers = auth_header(token)
    resp = await client.post(f"{CLIENT_V3}/user/{alice}/filter", json=FILTER, headers=headers)
    assert resp.status == 200
    assert await resp.json() == {"filter_id": "0"}
    resp = await client.post(f"{CLIENT_V3}/user/{alice}/filter", json={}, headers=headers)
    assert await resp.json() == {"filter_id": "1"}
    # The same filter again keeps its id.
    resp = await client.post(
        f"/_matrix/client/r0/user/{alice}/filter", json=FILTER, headers=headers
    )
    assert await resp.json() == {"filter_id": "0"}
    resp = await client.get(f"{CLIENT_V3}/user/{alice}/filter/0", headers=headers)
    assert resp.status == 200
    assert await resp.json() == FILTER
    resp = await client.get(f"{CLIENT_V3}/user/{alice}/filter/1", headers=headers)
    assert await resp.json() == {}


async def test_ids_are_per_user(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, alice_token = await make_user(client, "alice")
    bob, bob_token = await make_user(client, "bob")
    resp = await client.post(
        f"{CLIENT_V3}/user/{alice}/filter", json={"room": {}}, headers=auth_header(alice_token)
    )
    assert await resp.json() == {"filter_id": "0"}
    resp = await client.post(
        f"{CLIENT_V3}/user/{bob}/filter", json=FILTER, headers=auth_header(bob_token)
    )
    assert await resp.json() == {"filter_id": "0"}
    resp = await client.get(f"{CLIENT_V3}/user/{bob}/filter/0", headers=auth_header(bob_token))
    assert await resp.json() == FILTER


async def test_unknown_filters(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, token = await make_user(client, "alice")
    for filter_id in ("0", "7", "abc", "-1", "99999999999999999999999", "²"):
        resp = await client.get(
            f"{CLIENT_V3}/user/{alice}/filter/{filter_id}", headers=auth_header(token)
        )
        await _error(resp, 404, "M_NOT_FOUND")


async def test_other_users_filters(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice, alice_token = await make_user(client, "alice")
    _, bob_token = await make_user(client, "bob")
    await client.post(f"{CLIENT_V3}/user/{alice}/filter", json={}, headers=auth_header(alice_token))
    resp = await client.get(f"{CLIENT_V3}/user/{alice}/filter/0", headers=auth_header(bob_token))
    await _error(resp, 403, "M_FORBIDDEN")
    resp = await client.post(
        f"{CLIENT_V3}/user/{alice}/filter", json={}, headers=auth_header(bob_token)
    )
    await _error(resp, 403, "M_FORBIDDEN")
    await _error(
        await client.post(f"{CLIENT_V3}/user/{alice}/filter", json={}), 401, "M_MISSING_TOKEN"
    )
    resp = await client.get(f"{CLIENT_V3}/user/{alice}/filter/0", headers=auth_header("nope"))
    await _error(resp, 401, "M_UNKNOWN_TOKEN")


async def test_malformed_filters(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(max_request_size=1024)
    alice, token = await make_user(client, "alice")
    url = f"{CLIENT_V3}/user/{alice}/filter"
    headers = auth_header(token)
    await _error(await client.post(url, data=b"{oops", headers=headers), 400, "M_NOT_JSON")
    for bad in (
        [],
        {"room": []},
        {"room": {"timeline": {"limit": "10"}}},
        {"room": {"timeline": {"limit": 0}}},
        {"room": {"timeline": {"limit": True}}},
        {"room": {"state": {"types": "m.room.member"}}},
        {"room": {"state": {"types": [1]}}},
        {"room": {"rooms": ["not-a-room"]}},
        {"room": {"include_leave": "yes"}},
        {"room": {"ephemeral": {"contains_url": 1}}},
        {"room": {"account_data": {"lazy_load_members": "true"}}},
        {"presence": {"senders": ["nobody"]}},
        {"account_data": {"not_senders": [None]}},
        {"event_fields": "type"},
        {"event_format": "raw"},
        {"room": {"timeline": {"types": ["a\x00"]}}},
    ):
        await _error(await client.post(url, json=bad, headers=headers), 400, "M_BAD_JSON")
    resp = await client.post(url, json={"event_fields": ["x" * 1100]}, headers=headers)
    await _error(resp, 413, "M_TOO_LARGE")
