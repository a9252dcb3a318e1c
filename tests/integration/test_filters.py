"""Filters over HTTP: uploading and downloading them, and what `event_fields` and
`event_format` do to the events of /sync and /messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, make_user

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
        {"room": {"timeline": {"limit": -1}}},
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
        {"event_fields": ["content..body"]},
        {"event_fields": [""]},
        {"room": {"timeline": {"types": ["a\x00"]}}},
        # Explicit nulls: the filter is served back as uploaded, and no field is nullable.
        {"room": {"state": {"include_redundant_members": None}}},
        {"room": {"timeline": {"limit": None}}},
        {"presence": {"types": None}},
        {"room": None},
        {"event_format": None},
    ):
        await _error(await client.post(url, json=bad, headers=headers), 400, "M_BAD_JSON")
    resp = await client.post(url, json={"event_fields": ["x" * 1100]}, headers=headers)
    await _error(resp, 413, "M_TOO_LARGE")


async def _sync(user: RoomUser, **params: Any) -> Any:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    status, body = await user.get("/v3/sync", **query)
    assert status == 200, body
    return body


async def test_event_fields_in_sync(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(topic="plants")
    first = await alice.say(room, "hello")
    await alice.send(
        room,
        {
            "msgtype": "m.text",
            "body": "reply",
            "m.relates_to": {"m.in_reply_to": {"event_id": first}},
        },
    )
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.prefs", {"a": 1})
    # `\.` is a dot inside a property name.
    fields = ["type", "content.body", "content.m\\.relates_to.m\\.in_reply_to", "content.topic"]
    body = await _sync(alice, filter={"event_fields": fields, "room": {"timeline": {"limit": 2}}})
    entry = body["rooms"]["join"][room]
    assert entry["timeline"]["events"] == [
        {"type": "m.room.message", "content": {"body": "hello"}},
        {
            "type": "m.room.message",
            "content": {"body": "reply", "m.relates_to": {"m.in_reply_to": {"event_id": first}}},
        },
    ]
    state = entry["state"]["events"]
    assert {"type": "m.room.topic", "content": {"topic": "plants"}} in state
    assert all(set(event) <= {"type", "content"} for event in state)
    assert {"type": "org.example.prefs"} in body["account_data"]["events"]

    # A stored filter does the same, and events without a filter are whole.
    resp = await client.post(
        f"{CLIENT_V3}/user/{alice.user_id}/filter",
        json={"event_fields": ["event_id"]},
        headers=alice.headers,
    )
    filter_id = (await resp.json())["filter_id"]
    timeline = (await _sync(alice, filter=filter_id))["rooms"]["join"][room]["timeline"]
    assert timeline["events"] and all(set(event) == {"event_id"} for event in timeline["events"])
    whole = (await _sync(alice))["rooms"]["join"][room]["timeline"]["events"][-1]
    assert {"event_id", "sender", "origin_server_ts", "unsigned", "content"} <= set(whole)


async def test_event_fields_in_messages(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room()
    await alice.say(room, "one")
    event_filter = {"types": ["m.room.message"], "event_fields": ["content.body", "sender"]}
    status, page = await alice.get(
        f"/v3/rooms/{room}/messages", dir="b", filter=json.dumps(event_filter)
    )
    assert status == 200
    assert page["chunk"] == [{"content": {"body": "one"}, "sender": alice.user_id}]
    status, page = await alice.get(
        f"/v3/rooms/{room}/messages", dir="b", filter=json.dumps({"event_fields": ["a..b"]})
    )
    assert (status, page["errcode"]) == (400, "M_BAD_JSON")


async def test_event_format_federation(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room()
    kept = await alice.say(room, "kept")
    gone = await alice.say(room, "secret")
    await alice.redact(room, gone)
    # A short timeline, so that the room's state comes in the state section.
    body = await _sync(
        alice, filter={"event_format": "federation", "room": {"timeline": {"limit": 3}}}
    )
    entry = body["rooms"]["join"][room]
    events = {e["event_id"]: e for e in entry["timeline"]["events"]}
    pdu = events[kept]
    # The PDU as servers see it: hashes, signatures, DAG edges, depth, room id.
    assert {"auth_events", "prev_events", "hashes", "signatures", "depth", "room_id"} <= set(pdu)
    assert pdu["content"] == {"msgtype": "m.text", "body": "kept"}
    assert "age" in pdu["unsigned"]
    # A redacted event is pruned, its signatures intact.
    assert events[gone]["content"] == {}
    assert "signatures" in events[gone]
    assert "redacted_because" in events[gone]["unsigned"]
    assert entry["state"]["events"]
    for event in entry["state"]["events"]:
        assert {"signatures", "hashes", "auth_events", "state_key"} <= set(event)
    # With event_fields on top.
    body = await _sync(
        alice, filter={"event_format": "federation", "event_fields": ["depth", "event_id"]}
    )
    timeline = body["rooms"]["join"][room]["timeline"]["events"]
    assert timeline and all(set(event) == {"depth", "event_id"} for event in timeline)
    # The client format stays the default.
    client_form = (await _sync(alice))["rooms"]["join"][room]["timeline"]["events"]
    assert client_form and all("signatures" not in event for event in client_form)
