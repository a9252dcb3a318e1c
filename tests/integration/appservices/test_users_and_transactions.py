"""Application services (bridges) against a real homeserver, over real HTTP both ways:
a bridge registers bridged users, acts as them and logs in as them, receives the events
of its rooms (retried, resumed after a restart), answers pings and alias queries, and
bad registration files fail with one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homeserver.api.context import HOMESERVER
from homeserver.config import ConfigError
from homeserver.services.appservices.registry import load_registry
from homeserver.services.appservices.sender import AppServiceSender
from tests.integration.appservices.bridge import (
    AS_TOKEN,
    HS_TOKEN,
    SENDER,
    Bridge,
    Client,
    as_call,
    new_human,
    register_bridged,
    registration,
    room_with,
    write_registration,
)
from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, register_user


async def test_registers_bridged_users_and_acts_as_them(server: Client) -> None:
    user_id = await register_bridged(server, "bridge_alice")
    assert user_id == "@bridge_alice:test.local"
    # Without user_id the as_token acts as the sender, created on demand.
    status, body = await as_call(server, "GET", "/v3/account/whoami")
    assert (status, body["user_id"]) == (200, SENDER)
    status, body = await as_call(server, "GET", "/v3/account/whoami", user_id=user_id)
    assert (status, body["user_id"]) == (200, user_id)
    # Registering the same id again, or one outside the namespace, fails.
    status, body = await as_call(
        server,
        "POST",
        "/v3/register",
        {"type": "m.login.application_service", "username": "bridge_alice"},
    )
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await as_call(
        server,
        "POST",
        "/v3/register",
        {"type": "m.login.application_service", "username": "mallory"},
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")


async def test_identity_assertion_limits(server: Client) -> None:
    human = await register_user(server, "human")
    # A user outside the namespace cannot be impersonated.
    status, body = await as_call(server, "GET", "/v3/account/whoami", user_id=human["user_id"])
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Neither can one inside it that the AS never registered.
    status, body = await as_call(
        server, "GET", "/v3/account/whoami", user_id="@bridge_ghost:test.local"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # A wrong token is an unknown token, as the query parameter too.
    resp = await server.get(
        f"{CLIENT_V3}/account/whoami", params={"access_token": "nope", "user_id": SENDER}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    resp = await server.get(f"{CLIENT_V3}/account/whoami", params={"access_token": AS_TOKEN})
    assert (resp.status, (await resp.json())["user_id"]) == (200, SENDER)
    # An ordinary user's token does not gain identity assertion.
    resp = await server.get(
        f"{CLIENT_V3}/account/whoami",
        params={"user_id": SENDER},
        headers=auth_header(human["access_token"]),
    )
    assert (await resp.json())["user_id"] == human["user_id"]


async def test_ordinary_users_cannot_take_exclusive_ids(server: Client) -> None:
    resp = await server.post(
        f"{CLIENT_V3}/register", json={"username": "bridge_bob", "password": "pw"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    resp = await server.get(f"{CLIENT_V3}/register/available", params={"username": "bridge_bob"})
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    # Outside the namespace registration works as before.
    assert (await register_user(server, "bob"))["user_id"] == "@bob:test.local"
    # Aliases in the exclusive namespace are the AS's alone.
    bob = RoomUser(server, *(await new_human(server, "bob2")))
    room_id = await bob.create_room()
    resp = await server.put(
        f"{CLIENT_V3}/directory/room/%23bridge_x:test.local",
        json={"room_id": room_id},
        headers=bob.headers,
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")
    resp = await server.post(
        f"{CLIENT_V3}/createRoom", json={"room_alias_name": "bridge_y"}, headers=bob.headers
    )
    assert (resp.status, (await resp.json())["errcode"]) == (400, "M_EXCLUSIVE")


async def test_login_as_bridged_user(server: Client) -> None:
    user_id = await register_bridged(server, "bridge_carol")
    status, body = await as_call(
        server,
        "POST",
        "/v3/login",
        {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "bridge_carol"},
        },
    )
    assert status == 200, body
    resp = await server.get(
        f"{CLIENT_V3}/account/whoami", headers=auth_header(body["access_token"])
    )
    assert (await resp.json()) == {
        "user_id": user_id,
        "device_id": body["device_id"],
        "is_guest": False,
    }
    # The device can now be asserted along with the user.
    status, who = await as_call(
        server, "GET", "/v3/account/whoami", user_id=user_id, device_id=body["device_id"]
    )
    assert (status, who["device_id"]) == (200, body["device_id"])
    status, who = await as_call(
        server, "GET", "/v3/account/whoami", user_id=user_id, device_id="NOSUCHDEVICE"
    )
    assert status == 403
    # Logging in someone outside the namespace, or without the as_token, is refused.
    await register_user(server, "dave")
    status, body = await as_call(
        server,
        "POST",
        "/v3/login",
        {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "dave"},
        },
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    resp = await server.post(
        f"{CLIENT_V3}/login",
        json={
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "bridge_carol"},
        },
    )
    assert resp.status == 401


async def test_events_of_interesting_rooms_are_pushed(server: Client, bridge: Bridge) -> None:
    bridged = await register_bridged(server, "bridge_erin")
    human_body = await register_user(server, "frank")
    human = RoomUser(server, human_body["user_id"], human_body["access_token"])
    shared = await human.create_room()
    other = await human.create_room()
    await human.invite(shared, bridged)
    status, _ = await as_call(server, "POST", f"/v3/rooms/{shared}/join", user_id=bridged)
    assert status == 200
    hello = await human.say(shared, "hello bridge")
    secret = await human.say(other, "not for the bridge")
    status, sent = await as_call(
        server,
        "PUT",
        f"/v3/rooms/{shared}/send/m.room.message/b1",
        {"msgtype": "m.text", "body": "hi from the other network"},
        user_id=bridged,
    )
    assert status == 200
    await bridge.wait_for_event(sent["event_id"])
    events = bridge.events()
    ids = [e["event_id"] for e in events]
    assert hello in ids and secret not in ids
    assert all(e["room_id"] == shared for e in events)
    # Client-format events, in the room's order: invite, join, message, reply.
    kinds = [(e["type"], e.get("state_key"), e["sender"]) for e in events]
    assert kinds.index(("m.room.member", bridged, human.user_id)) < kinds.index(
        ("m.room.member", bridged, bridged)
    )
    assert ids.index(hello) < ids.index(sent["event_id"])
    assert events[ids.index(sent["event_id"])]["sender"] == bridged
    assert events[ids.index(hello)]["content"]["body"] == "hello bridge"
    # Every transaction carries the hs_token, and txnIds are not reused.
    assert {auth for _, auth, _ in bridge.transactions} == {f"Bearer {HS_TOKEN}"}
    txn_ids = [t for t, _, _ in bridge.transactions]
    assert len(set(txn_ids)) == len(txn_ids)
    assert len(ids) == len(set(ids))


async def test_failed_transaction_is_retried_with_the_same_txn_id(
    server: Client, bridge: Bridge
) -> None:
    bridged = await register_bridged(server, "bridge_gina")
    room_id, human = await room_with(server, bridged)
    joined = await human.say(room_id, "everything before this is delivered")
    await bridge.wait_for_event(joined)
    before = len(bridge.transactions)
    bridge.answers = [500]
    message = await human.say(room_id, "x")
    await bridge.wait_for(before + 2)
    (failed_id, _, failed), (retry_id, _, retried) = bridge.transactions[before : before + 2]
    assert retry_id == failed_id
    assert [e["event_id"] for e in failed] == [message]
    assert [e["event_id"] for e in retried] == [message]
    # The next transaction gets a new id, and the retried events are not sent again.
    follow = await as_call(
        server,
        "PUT",
        f"/v3/rooms/{room_id}/send/m.room.message/g1",
        {"msgtype": "m.text", "body": "after"},
        user_id=bridged,
    )
    await bridge.wait_for_event(follow[1]["event_id"])
    later_ids = [t for t, _, _ in bridge.transactions[before + 2 :]]
    assert later_ids and failed_id not in later_ids
    ids = [e["event_id"] for e in bridge.events()]
    assert len(ids) == len(set(ids))


async def test_delivery_resumes_after_restart_without_repeats(
    server: Client, bridge: Bridge
) -> None:
    bridged = await register_bridged(server, "bridge_ivy")
    room_id, human = await room_with(server, bridged)
    first = await human.say(room_id, "before restart")
    await bridge.wait_for_event(first)
    hs = server.server.app[HOMESERVER]
    await hs.appservices_sender.close()
    during = await human.say(room_id, "while the sender is down")
    hs.appservices_sender = AppServiceSender(hs.db, hs.event_cache, hs.appservices_registry)
    await hs.appservices_sender.start()
    await bridge.wait_for_event(during)
    after = await human.say(room_id, "after restart")
    await bridge.wait_for_event(after)
    ids = [e["event_id"] for e in bridge.events()]
    assert len(ids) == len(set(ids))
    assert ids.index(first) < ids.index(during) < ids.index(after)
    txn_ids = [int(t) for t, _, _ in bridge.transactions]
    assert txn_ids == sorted(txn_ids)


async def test_ping(server: Client, bridge: Bridge) -> None:
    status, body = await as_call(
        server, "POST", "/v1/appservice/testbridge/ping", {"transaction_id": "ping-1"}
    )
    assert status == 200 and isinstance(body["duration_ms"], int)
    assert bridge.pings == [(f"Bearer {HS_TOKEN}", {"transaction_id": "ping-1"})]
    status, body = await as_call(server, "POST", "/v1/appservice/otherbridge/ping", {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    human = await register_user(server, "ida")
    resp = await server.post(
        "/_matrix/client/v1/appservice/testbridge/ping",
        json={},
        headers=auth_header(human["access_token"]),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_ping_reports_an_unreachable_service(
    homeserver_client: Callable[..., Any], tmp_path: Path
) -> None:
    reg = write_registration(tmp_path / "dead.yaml", registration("http://127.0.0.1:9"))
    client: Client = await homeserver_client(app_service_config_files=[reg])
    status, body = await as_call(client, "POST", "/v1/appservice/testbridge/ping", {})
    assert (status, body["errcode"]) == (502, "M_CONNECTION_FAILED")
    reg = write_registration(tmp_path / "nourl.yaml", registration(None, id="nourl"))
    client = await homeserver_client(app_service_config_files=[reg])
    status, body = await as_call(client, "POST", "/v1/appservice/nourl/ping", {})
    assert (status, body["errcode"]) == (400, "M_URL_NOT_SET")


async def test_unknown_alias_is_asked_of_the_service(server: Client, bridge: Bridge) -> None:
    resp = await server.get(f"{CLIENT_V3}/directory/room/%23bridge_lobby:test.local")
    assert resp.status == 200, await resp.text()
    room_id = (await resp.json())["room_id"]
    assert bridge.alias_queries == ["#bridge_lobby:test.local"]
    # The room exists and the bridge bot created it.
    status, state = await as_call(server, "GET", f"/v3/rooms/{room_id}/state/m.room.create/")
    assert status == 200 and state
    # Aliases outside its namespace are not asked about.
    resp = await server.get(f"{CLIENT_V3}/directory/room/%23elsewhere:test.local")
    assert resp.status == 404
    assert bridge.alias_queries == ["#bridge_lobby:test.local"]


def test_bad_registrations_fail_with_one_line(tmp_path: Path) -> None:
    good = write_registration(tmp_path / "a.yaml", registration("http://127.0.0.1:1"))
    cases = {
        "duplicate id": registration(None, as_token="t2", hs_token="h2", sender_localpart="b2"),
        "regex": registration(
            None, id="x", namespaces={"users": [{"regex": "@(", "exclusive": True}]}
        ),
        "sender_localpart": registration(None, id="y", sender_localpart="Bad Name!"),
        "token": registration(None, id="z", sender_localpart="b3"),
        "missing": {"id": "w", "url": None},
    }
    for name, data in cases.items():
        other = write_registration(tmp_path / "b.yaml", data)
        with pytest.raises(ConfigError) as excinfo:
            load_registry([good, other], "test.local")
        message = str(excinfo.value)
        assert "\n" not in message and "b.yaml" in message, (name, message)
    with pytest.raises(ConfigError):
        load_registry([str(tmp_path / "missing.yaml")], "test.local")
    assert [s.id for s in load_registry([good], "test.local").services] == ["testbridge"]
