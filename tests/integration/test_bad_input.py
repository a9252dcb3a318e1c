"""Bad input gets the spec's 400, never a 500: content that cannot be signed, bodies
nested too deep, U+0000 anywhere (PostgreSQL cannot store it), numbers PostgreSQL keeps
exactly but our encoder cannot write, malformed request lines."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

NOT_CANONICAL: list[Any] = [1.5, 2**53, -(2**53), {"n": 0.25}]


def nested(depth: int) -> bytes:
    """A JSON object `depth` levels deep, as text (deeper than the stdlib encodes)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def with_field(body: dict[str, Any], name: str, raw: bytes) -> bytes:
    """`body` as JSON text with one more field holding the JSON text `raw`."""
    text = orjson.dumps(body)
    separator = b"," if body else b""
    return text[:-1] + separator + b'"' + name.encode() + b'":' + raw + b"}"


async def joined_rooms(user: RoomUser) -> list[str]:
    status, body = await user.get("/v3/joined_rooms")
    assert status == 200
    return list(body["joined_rooms"])


async def test_send_and_state_refuse_content_that_is_not_canonical_json(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    for n, value in enumerate(NOT_CANONICAL):
        for path in (f"/send/m.x/t{n}", f"/state/m.x/k{n}"):
            status, body = await call(
                open_client, "PUT", f"/v3/rooms/{room}{path}", {"v": value}, headers=alice.headers
            )
            assert status == 400 and body["errcode"] == "M_BAD_JSON", (path, value, body)
            assert "canonical JSON" in body["error"]
    # The room still works, and none of the refused events got in.
    await alice.say(room, "still here")
    status, state = await alice.get(f"/v3/rooms/{room}/state")
    assert status == 200 and not [e for e in state if e["type"] == "m.x"]


async def test_create_room_refuses_content_that_is_not_canonical_json(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    for value in NOT_CANONICAL:
        for field in (
            {"power_level_content_override": {"events": {"m.x": value}}},
            {"initial_state": [{"type": "m.x", "state_key": "", "content": {"v": value}}]},
            {"creation_content": {"v": value}},
        ):
            status, body = await call(
                open_client, "POST", "/v3/createRoom", field, headers=alice.headers
            )
            assert status == 400 and body["errcode"] == "M_BAD_JSON", (field, body)
    assert await joined_rooms(alice) == []  # nothing half-created


async def test_a_refused_send_does_not_fail_the_sends_batched_with_it(
    open_client: TestClient[Any, Any],
) -> None:
    """Sends to one room are written in batches: one bad event must fail alone."""
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()

    async def send(n: int, content: dict[str, Any]) -> tuple[int, Any]:
        path = f"/v3/rooms/{room}/send/m.room.message/c{n}"
        return await call(open_client, "PUT", path, content, headers=alice.headers)

    results = await asyncio.gather(
        *(
            send(n, {"body": "bad", "f": 0.5} if n % 4 == 2 else {"body": f"ok {n}"})
            for n in range(24)
        )
    )
    for n, (status, body) in enumerate(results):
        if n % 4 == 2:
            assert status == 400 and body["errcode"] == "M_BAD_JSON"
        else:
            assert status == 200, (n, body)


@pytest.mark.parametrize("depth", [120, 300, 2000])
async def test_bodies_nested_too_deep_are_refused(
    open_client: TestClient[Any, Any], depth: int
) -> None:
    """Deeper than 100 levels is refused for every body, user-interactive auth included
    (whose session binds a hash of the body)."""
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    deep = nested(depth)
    for method, path, data in (
        ("POST", "/v3/delete_devices", with_field({"devices": ["X"]}, "x", deep)),
        ("POST", "/v3/account/password", with_field({"new_password": "pw"}, "x", deep)),
        ("POST", "/v3/account/deactivate", with_field({}, "x", deep)),
        ("POST", "/v3/keys/device_signing/upload", with_field({}, "x", deep)),
        ("PUT", f"/v3/rooms/{room}/send/m.x/deep{depth}", with_field({}, "x", deep)),
        ("PUT", f"/v3/user/{alice.user_id}/account_data/m.x", with_field({}, "x", deep)),
        ("PUT", "/v3/sendToDevice/m.x/deep", b'{"messages":{"@a:b":{"*":' + deep + b"}}}"),
    ):
        status, answer = await call(open_client, method, path, data=data, headers=alice.headers)
        assert status == 400 and answer["errcode"] == "M_BAD_JSON", (path, answer)
        assert "nested" in answer["error"]
    # 100 levels are fine.
    status, _ = await call(
        open_client,
        "PUT",
        f"/v3/user/{alice.user_id}/account_data/m.x",
        data=nested(100),
        headers=alice.headers,
    )
    assert status == 200


def _routes_with_parameters(app: web.Application) -> list[tuple[str, web.AbstractResource, str]]:
    """(method, resource, parameter) for every routed parameter of the application."""
    found = []
    for resource in app.router.resources():
        formatter = resource.get_info().get("formatter")
        if not isinstance(formatter, str):
            continue
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            for name in re.findall(r"\{(\w+)\}", formatter):
                found.append((route.method, resource, name))
    return found


async def test_nul_in_any_path_parameter_is_refused_on_every_route(
    open_client: TestClient[Any, Any],
) -> None:
    """Walks the application's route table: every parameter of every route, client,
    federation, admin and media alike, without credentials (the refusal comes first)."""
    routes = _routes_with_parameters(open_client.app)
    assert len(routes) > 250  # the walk really covers the API
    failures = []
    for method, resource, name in routes:
        values = {param: "x" for param in re.findall(r"\{(\w+)\}", resource.canonical)}
        values[name] = "a\x00b"
        url = resource.url_for(**values)  # type: ignore[attr-defined]
        assert "%00" in str(url)
        resp = await open_client.request(method, url, json={})
        body = await resp.json()
        if resp.status != 400 or body.get("errcode") != "M_INVALID_PARAM":
            failures.append((method, resource.canonical, name, resp.status, body))
    assert failures == []


async def test_nul_in_the_query_is_refused_on_every_route(
    open_client: TestClient[Any, Any],
) -> None:
    failures = []
    checked = 0
    for resource in open_client.app.router.resources():
        values = {param: "x" for param in re.findall(r"\{(\w+)\}", resource.canonical)}
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            for query in ({"from": "a\x00b"}, {"a\x00b": "1"}):
                url = resource.url_for(**values).with_query(query)  # type: ignore[attr-defined]
                resp = await open_client.request(route.method, url, json={})
                body = await resp.json()
                checked += 1
                if resp.status != 400 or body.get("errcode") != "M_INVALID_PARAM":
                    failures.append((route.method, resource.canonical, query, resp.status))
    assert checked > 400
    assert failures == []


def nul_in_path_or_query(alice: RoomUser, room: str) -> list[Any]:
    """Requests whose path or query carried U+0000 down to PostgreSQL (500) before the
    edge refused it: (method, path, body). `%00` in a path is U+0000 in a parameter."""
    me, v3 = quote(alice.user_id), "/v3"
    r = f"{v3}/rooms/{room}"
    return [
        ("PUT", f"{r}/send/m.x%00y/t1", {}),
        ("PUT", f"{r}/send/m.x/t%00", {}),
        ("PUT", f"{r}/state/m.x%00y/", {}),
        ("PUT", f"{r}/state/m.x/k%00", {}),
        ("GET", f"{r}/state/m.x%00/", None),
        ("GET", f"{r}/state/m.x/k%00", None),
        ("GET", f"{v3}/rooms/!a%00b:test.local/messages", None),
        ("GET", f"{r}/event/$a%00b", None),
        ("GET", f"{r}/context/$a%00b", None),
        ("GET", f"/v1/rooms/{room}/relations/$a%00b", None),
        ("PUT", f"{r}/redact/$a%00b/t2", {}),
        ("POST", f"{r}/receipt/m.read/$a%00b", {}),
        ("POST", f"{r}/report/$a%00b", {"reason": "spam"}),
        ("PUT", f"{r}/typing/@a%00b:test.local", {"typing": True}),
        ("POST", f"{v3}/join/!a%00b:test.local", {}),
        ("POST", f"{v3}/rooms/!a%00b:test.local/leave", {}),
        ("PUT", f"{v3}/user/{me}/account_data/m.x%00", {}),
        ("GET", f"{v3}/user/{me}/account_data/m.x%00", None),
        ("PUT", f"{v3}/user/{me}/rooms/{room}/account_data/m.x%00", {}),
        ("PUT", f"{v3}/user/{me}/rooms/{room}/tags/u.a%00", {}),
        ("DELETE", f"{v3}/user/{me}/rooms/{room}/tags/u.a%00", None),
        ("GET", f"{v3}/user/{me}/filter/1%00", None),
        ("GET", f"{v3}/devices/D%00", None),
        ("PUT", f"{v3}/devices/D%00", {"display_name": "x"}),
        ("DELETE", f"{v3}/devices/D%00", {}),
        ("PUT", f"{v3}/pushrules/global/override/r%00", {"actions": [], "conditions": []}),
        ("GET", f"{v3}/pushrules/global/override/r%00", None),
        ("PUT", f"{v3}/pushrules/global/override/r%00/enabled", {"enabled": True}),
        ("GET", f"{v3}/profile/@a%00b:test.local", None),
        ("GET", f"{v3}/presence/@a%00b:test.local/status", None),
        ("GET", f"{v3}/directory/room/%23a%00b:test.local", None),
        ("PUT", f"{v3}/directory/room/%23a%00b:test.local", {"room_id": room}),
        ("PUT", f"{v3}/sendToDevice/m.x%00/t3", {"messages": {}}),
        ("GET", f"{v3}/user/@a%00b:test.local/filter/1", None),
        ("GET", "/_synapse/admin/v2/users/@a%00b:test.local", None),
        ("GET", "/_matrix/client/v1/media/download/test.local/a%00b", None),
        # Query parameters.
        ("GET", f"{v3}/sync?since=s1%00", None),
        ("GET", f"{r}/messages?from=t1%00", None),
        ("GET", f"{v3}/publicRooms?server=a%00b", None),
        ("GET", f"{v3}/notifications?from=1%00", None),
    ]


def nul_in_body(alice: RoomUser, bob: RoomUser, room: str, event: str) -> list[Any]:
    """Requests whose JSON body carried U+0000 down to PostgreSQL (500) before the edge
    refused it: (method, path, body)."""
    me, v3 = quote(alice.user_id), "/v3"
    r = f"{v3}/rooms/{room}"
    nul = "a\x00b"
    pusher = {
        "pushkey": "k",
        "kind": "http",
        "app_id": "a",
        "app_display_name": "A",
        "device_display_name": "D",
        "lang": "en",
        "data": {"url": "https://push.example/_matrix/push/v1/notify"},
    }
    return [
        ("POST", f"{r}/report/{event}", {"reason": nul}),
        ("POST", f"{r}/report", {"reason": nul}),
        ("POST", f"{v3}/pushers/set", {**pusher, "pushkey": nul}),
        ("POST", f"{v3}/pushers/set", {**pusher, "app_display_name": nul}),
        ("POST", f"{v3}/pushers/set", {**pusher, "data": {"url": nul}}),
        (
            "PUT",
            f"{v3}/pushrules/global/override/r1",
            {
                "actions": ["notify"],
                "conditions": [{"kind": "event_match", "key": "content.body", "pattern": nul}],
            },
        ),
        ("PUT", f"{v3}/pushrules/global/content/r2", {"actions": ["notify"], "pattern": nul}),
        ("POST", f"{r}/invite", {"user_id": "@a\x00b:test.local"}),
        ("POST", f"{r}/kick", {"user_id": bob.user_id, "reason": nul}),
        ("POST", f"{r}/ban", {"user_id": "@a\x00b:test.local"}),
        ("POST", f"{v3}/join/{room}", {"reason": nul}),
        ("PUT", f"{v3}/directory/room/%23new:test.local", {"room_id": "!a\x00b:test.local"}),
        ("PUT", f"{v3}/presence/{me}/status", {"presence": "online", "status_msg": nul}),
        ("POST", f"{v3}/createRoom", {"name": nul}),
        ("POST", f"{v3}/createRoom", {"topic": nul}),
        ("POST", f"{v3}/createRoom", {"room_alias_name": nul}),
        ("POST", f"{v3}/createRoom", {"invite": ["@a\x00b:test.local"]}),
        ("POST", f"{v3}/createRoom", {"room_version": nul}),
        ("PUT", f"{r}/state/m.room.topic/", {"topic": nul}),
        ("PUT", f"{r}/redact/{event}/t5", {"reason": nul}),
        ("PUT", f"{v3}/profile/{me}/displayname", {"displayname": nul}),
        ("PUT", f"{v3}/devices/TESTDEVICE", {"display_name": nul}),
        ("POST", f"{v3}/user/{me}/filter", {"room": {"rooms": [nul]}}),
        ("PUT", f"{v3}/user/{me}/account_data/m.x", {nul: 1}),
        ("POST", f"{v3}/keys/query", {"device_keys": {"@a\x00b:test.local": []}}),
        ("POST", f"{v3}/keys/claim", {"one_time_keys": {alice.user_id: {nul: "x"}}}),
        ("PUT", f"{v3}/sendToDevice/m.x/t6", {"messages": {"@a\x00b:test.local": {"*": {}}}}),
        ("POST", f"{v3}/user_directory/search", {"search_term": nul}),
        ("POST", f"{v3}/search", {"search_categories": {"room_events": {"search_term": nul}}}),
        ("POST", f"{v3}/publicRooms", {"filter": {"generic_search_term": nul}}),
        ("POST", f"{r}/read_markers", {"m.fully_read": "$a\x00b"}),
        ("POST", f"{r}/upgrade", {"new_version": nul}),
        ("POST", f"{v3}/login", {"type": "m.login.password", "user": nul, "password": "x"}),
        ("POST", f"{v3}/register", {"username": nul, "password": "x"}),
    ]


def nul_requests(alice: RoomUser, bob: RoomUser, room: str, event: str) -> list[Any]:
    """(method, path, body, expected errcode) of every request above."""
    return [(*request, "M_INVALID_PARAM") for request in nul_in_path_or_query(alice, room)] + [
        (*request, "M_BAD_JSON") for request in nul_in_body(alice, bob, room, event)
    ]


async def test_nul_is_refused_on_endpoints_that_used_to_fail_with_500(
    open_client: TestClient[Any, Any],
) -> None:
    """Authenticated, in a real room, so that without the edge check each request would
    reach its handler and PostgreSQL."""
    alice = await RoomUser.make(open_client, "alice")
    bob = await RoomUser.make(open_client, "bob")
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    event = await alice.say(room, "hello")
    failures = []
    for method, path, body, errcode in nul_requests(alice, bob, room, event):
        resp = await open_client.request(
            method,
            f"/_matrix/client{path}" if path.startswith("/v") else path,
            json=body,
            headers=alice.headers,
        )
        answer = await resp.json()
        if resp.status != 400 or answer.get("errcode") != errcode:
            failures.append((method, path, resp.status, answer))
    assert failures == []
    await alice.say(room, "the server is fine")


async def test_message_content_may_hold_nul_except_where_it_names_events(
    open_client: TestClient[Any, Any],
) -> None:
    """As on other servers, a message's content may hold U+0000 (events are stored as
    JSON text); not its relation or a redaction, which name events in PostgreSQL."""
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    target = await alice.say(room, "target")
    event_id = await alice.send(room, {"msgtype": "m.text", "body": "a\x00b"})
    status, event = await alice.get(f"/v3/rooms/{room}/event/{event_id}")
    assert status == 200 and event["content"]["body"] == "a\x00b"
    r = f"/v3/rooms/{room}"
    for path, content in (
        (
            f"{r}/send/m.room.message/n1",
            {"m.relates_to": {"rel_type": "a\x00", "event_id": target}},
        ),
        (f"{r}/send/m.reaction/n2", {"m.relates_to": {"event_id": "$a\x00b", "rel_type": "x"}}),
        (f"{r}/send/m.room.redaction/n3", {"redacts": "$a\x00b"}),
        (f"{r}/send/m.room.redaction/n4", {"redacts": target, "reason": "a\x00b"}),
        (f"{r}/state/m.room.topic/", {"topic": "a\x00b"}),
    ):
        status, body = await call(open_client, "PUT", path, content, headers=alice.headers)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", (path, body)
    status, event = await alice.get(f"/v3/rooms/{room}/event/{target}")
    assert event["content"]["body"] == "target"
    status, messages = await alice.get(f"/v3/rooms/{room}/messages", dir="b")
    assert status == 200 and len(messages["chunk"]) > 2


async def test_typing_timeout_must_be_a_non_negative_integer(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    path = f"/v3/rooms/{room}/typing/{alice.user_id}"
    for timeout in ([30000], {"ms": 1}, 1.5, "30000", None, True, -1):
        status, body = await call(
            open_client, "PUT", path, {"typing": True, "timeout": timeout}, headers=alice.headers
        )
        assert status == 400 and body["errcode"] == "M_BAD_JSON", (timeout, body)
    status, _ = await call(
        open_client, "PUT", path, {"typing": True, "timeout": 30000}, headers=alice.headers
    )
    assert status == 200


async def test_numbers_past_64_bits_are_stored_and_read_back(
    open_client: TestClient[Any, Any],
) -> None:
    """PostgreSQL keeps 1e30 as an exact number; read back as a 100-bit integer it made
    every later read of the profile, the pushers or the push rules fail."""
    alice = await RoomUser.make(open_client, "alice")
    me = alice.user_id
    big = 1e30
    await alice.ok("PUT", f"/profile/{me}/org.example.big", {"org.example.big": big})
    await alice.ok(
        "POST",
        "/pushers/set",
        {
            "pushkey": "k",
            "kind": "http",
            "app_id": "a",
            "app_display_name": "A",
            "device_display_name": "D",
            "lang": "en",
            "data": {"url": "https://push.example/_matrix/push/v1/notify", "big": big},
        },
    )
    condition = {"kind": "event_match", "key": "content.n", "pattern": "x", "big": big}
    await alice.ok(
        "PUT", "/pushrules/global/override/big", {"actions": [], "conditions": [condition]}
    )

    status, profile = await alice.get(f"/v3/profile/{me}")
    assert status == 200 and profile["org.example.big"] == big
    status, pushers = await alice.get("/v3/pushers")
    assert status == 200 and pushers["pushers"][0]["data"]["big"] == big
    status, rule = await alice.get("/v3/pushrules/global/override/big")
    assert status == 200 and rule["conditions"][0]["big"] == big
    status, _ = await alice.get("/v3/sync")
    assert status == 200


async def test_notifications_from_token_out_of_range(open_client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(open_client, "alice")
    for token in ("99999999999999999999999", "-5", "abc"):
        status, body = await alice.get("/v3/notifications", **{"from": token})
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", (token, body)


async def test_malformed_requests_are_logged_in_one_line_below_error(
    open_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A request line or header past aiohttp's limit is refused before any login: its
    log line must not be an ERROR with a traceback that anyone could repeat at will."""
    caplog.set_level(logging.DEBUG)
    long_line = await open_client.get("/_matrix/client/versions?x=" + "a" * 10_000)
    long_header = await open_client.get(
        "/_matrix/client/versions", headers={"X-Long": "a" * 10_000}
    )
    assert long_line.status == 414 and long_header.status == 431
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    refusals = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(refusals) == 2
    assert all(r.levelno == logging.INFO and "\n" not in r.getMessage() for r in refusals)
    assert all(len(r.getMessage()) < 400 for r in refusals)
