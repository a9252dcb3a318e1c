"""Notifications reaching push gateways (the Push Gateway API), over real HTTP to a
small gateway on loopback; and the pruning of old push actions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from tests.integration.conftest import RoomUser, make_config

Client = TestClient[Any, Any]
LOOPBACK = {"push.ip_range_whitelist": ["127.0.0.1/32"], "rate_limits.enabled": False}
QUIET_S = 1.5  # how long "nothing more arrives" is watched for
DAY_MS = 24 * 3600 * 1000


class Gateway:
    """A push gateway on loopback: records each notification, answers from a script
    (then 200, rejecting the pushkeys in `rejecting`)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.rejecting: set[str] = set()
        self._arrived = asyncio.Condition()
        self.url = ""

    async def notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._arrived:
            self.received.append(body["notification"])
            self._arrived.notify_all()
        if self.answers:
            status, answer = self.answers.pop(0)
            return web.json_response(answer, status=status)
        keys = [device["pushkey"] for device in body["notification"]["devices"]]
        return web.json_response({"rejected": [k for k in keys if k in self.rejecting]})

    async def wait_for(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    def for_pushkey(self, pushkey: str) -> list[dict[str, Any]]:
        return [n for n in self.received if n["devices"][0]["pushkey"] == pushkey]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", gw.notify)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    gw.url = f"http://127.0.0.1:{server.port}/_matrix/push/v1/notify"
    yield gw
    await server.close()


async def set_pusher(user: RoomUser, gw: Gateway, pushkey: str, **data: Any) -> None:
    await user.ok(
        "POST",
        "/pushers/set",
        {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": pushkey,
            "app_display_name": "Example",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": gw.url, **data},
        },
    )


async def two_in_a_room(client: Client) -> tuple[RoomUser, RoomUser, str]:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat", name="Mission Control")
    await bob.join(room_id)
    return alice, bob, room_id


async def test_message_reaches_the_gateway_with_the_spec_body(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Major Tom"})
    await set_pusher(bob, gateway, "bob-key", extra="kept")
    await set_pusher(alice, gateway, "alice-key")
    started = time.time()
    hello = await alice.say(room_id, "I'm floating")
    [first] = await gateway.wait_for(1)
    assert first["event_id"] == hello
    assert first["room_id"] == room_id
    assert first["type"] == "m.room.message"
    assert first["sender"] == alice.user_id
    assert first["sender_display_name"] == "Major Tom"
    assert first["room_name"] == "Mission Control"
    assert first["user_is_target"] is False
    assert first["content"] == {"msgtype": "m.text", "body": "I'm floating"}
    # A 1:1 room's message notifies with a sound, and does not highlight.
    assert first["prio"] == "low"
    assert first["counts"] == {"unread": 1}
    [device] = first["devices"]
    assert device["app_id"] == "org.example.app"
    assert device["pushkey"] == "bob-key"
    assert device["data"] == {"extra": "kept"}  # the pusher's data minus the url
    assert device["tweaks"] == {"sound": "default"}
    assert abs(device["pushkey_ts"] - started) < 60  # seconds, not milliseconds

    mention = await alice.send(
        room_id, {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}}
    )
    second = (await gateway.wait_for(2))[1]
    assert second["event_id"] == mention
    assert second["prio"] == "high"
    assert second["counts"] == {"unread": 2}
    assert second["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}

    # Bob's reply notifies alice; alice's own messages never went to her pushkey.
    reply = await bob.say(room_id, "copy")
    third = (await gateway.wait_for(3))[2]
    assert third["event_id"] == reply
    assert third["devices"][0]["pushkey"] == "alice-key"
    await asyncio.sleep(QUIET_S)
    assert [n["event_id"] for n in gateway.for_pushkey("alice-key")] == [reply]
    assert [n["event_id"] for n in gateway.for_pushkey("bob-key")] == [hello, mention]


async def test_each_commit_wakes_the_pushers_it_gave_work_without_waiting_for_a_sweep(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    """The pushers a commit gave work are looked up with the commit and woken at once,
    whether the members are notified by a row for the room (a plain message) or one
    by one (a mention): each push arrives well within the 5 s between sweeps, which
    could rescue at most one of the two."""
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    carol = await RoomUser.make(client, "carol")
    await carol.join(room_id)
    await set_pusher(bob, gateway, "bob-key")
    plain = await alice.say(room_id, "to everyone")
    [first] = await gateway.wait_for(1, within=2.0)
    await asyncio.sleep(0.5)
    mention = await alice.send(
        room_id, {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}}
    )
    second = (await gateway.wait_for(2, within=2.0))[1]
    assert [first["event_id"], second["event_id"]] == [plain, mention]
    assert second["prio"] == "high"


async def test_event_id_only_format(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await set_pusher(bob, gateway, "bob-key", format="event_id_only")
    event_id = await alice.say(room_id, "secret words")
    [note] = await gateway.wait_for(1)
    assert set(note) == {"event_id", "room_id", "prio", "counts", "devices"}
    assert note["event_id"] == event_id
    assert note["room_id"] == room_id
    assert note["counts"] == {"unread": 1}
    assert note["devices"][0]["data"] == {"format": "event_id_only"}


async def test_invite_is_high_priority_and_targets_the_user(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    await set_pusher(bob, gateway, "bob-key")
    room_id = await alice.create_room(preset="private_chat")
    await alice.invite(room_id, bob.user_id)
    [note] = await gateway.wait_for(1)
    assert note["type"] == "m.room.member"
    assert note["user_is_target"] is True
    assert note["prio"] == "high"
    assert note["content"]["membership"] == "invite"


async def test_rejected_pushkey_removes_the_pusher(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await set_pusher(bob, gateway, "stale-key")
    await set_pusher(bob, gateway, "good-key")
    # Each pusher sends on its own, in no set order: the gateway rejects by pushkey.
    gateway.rejecting = {"stale-key"}
    await alice.say(room_id, "hello")
    await gateway.wait_for(2)
    async with asyncio.timeout(10):
        while True:
            status, body = await bob.get("/v3/pushers")
            assert status == 200
            if [p["pushkey"] for p in body["pushers"]] == ["good-key"]:
                break
            await asyncio.sleep(0.05)
    # The removed pusher gets nothing more; the other one does.
    later = await alice.say(room_id, "again")
    await gateway.wait_for(3)
    await asyncio.sleep(QUIET_S)
    assert [n["event_id"] for n in gateway.for_pushkey("good-key")][-1] == later
    assert len(gateway.for_pushkey("stale-key")) == 1


async def test_server_error_is_retried_and_delivered_once(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await set_pusher(bob, gateway, "bob-key")
    gateway.answers = [(500, {"error": "upstream down"})]
    event_id = await alice.say(room_id, "hello")
    failed, retried = await gateway.wait_for(2)
    assert failed["event_id"] == retried["event_id"] == event_id
    await asyncio.sleep(QUIET_S)
    assert len(gateway.received) == 2
    # Working again: the next message goes straight out.
    later = await alice.say(room_id, "again")
    assert (await gateway.wait_for(3, within=2))[2]["event_id"] == later


async def test_client_error_drops_that_notification_only(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await set_pusher(bob, gateway, "bob-key")
    gateway.answers = [(400, {"error": "bad"})]
    first = await alice.say(room_id, "hello")
    second = await alice.say(room_id, "again")
    await gateway.wait_for(2)
    await asyncio.sleep(QUIET_S)
    assert [n["event_id"] for n in gateway.received] == [first, second]


async def test_no_push_for_own_messages_or_a_muted_room(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    other_room = await alice.create_room(preset="public_chat")
    await bob.join(other_room)
    await set_pusher(bob, gateway, "bob-key")
    await bob.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await bob.say(room_id, "my own words")
    await alice.say(room_id, "in the muted room")
    # Notifications go out in stream order: once this one is there, the others were
    # never coming.
    sentinel = await alice.say(other_room, "elsewhere")
    await gateway.wait_for(1)
    await asyncio.sleep(0.3)
    assert [n["event_id"] for n in gateway.received] == [sentinel]


async def test_private_address_gateway_is_refused_without_whitelist(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice, bob, room_id = await two_in_a_room(client)
    await set_pusher(bob, gateway, "bob-key")
    await alice.say(room_id, "hello")
    await asyncio.sleep(QUIET_S)
    assert gateway.received == []


async def test_pusher_gets_only_events_after_it_was_set(
    homeserver_client: Callable[..., Any], gateway: Gateway
) -> None:
    client: Client = await homeserver_client(**LOOPBACK)
    alice, bob, room_id = await two_in_a_room(client)
    await alice.say(room_id, "before the pusher")
    await set_pusher(bob, gateway, "bob-key")
    after = await alice.say(room_id, "after the pusher")
    [note] = await gateway.wait_for(1)
    assert note["event_id"] == after
    assert note["counts"] == {"unread": 2}  # the earlier message is unread all the same
    await asyncio.sleep(0.3)
    assert len(gateway.received) == 1


@pytest.fixture
async def two_apps(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[tuple[Client, Client]]:
    """Two homeserver instances (one server identity) sharing one database, each
    sweeping for pushers with work often, so both go after the same pushers."""
    conninfo = database_factory()
    clients: list[Client] = []
    dbs: list[Database] = []
    key_path = tmp_path / "signing.key"
    for n in range(2):
        config = make_config(tmp_path / f"hs{n}", **LOOPBACK)
        db = Database(conninfo, size=4)
        await db.open()
        dbs.append(db)
        hs = build_homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(key_path)
        )
        hs.push_gateway.sweep_interval_s = 0.05
        await hs.start()
        client: Client = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
    yield clients[0], clients[1]
    for client in clients:
        await client.close()
        await client.app[HOMESERVER].close()
    for db in dbs:
        await db.close()


async def test_two_instances_on_one_database_push_each_event_once(
    two_apps: tuple[Client, Client], gateway: Gateway
) -> None:
    first, second = two_apps
    alice, bob, room_id = await two_in_a_room(first)
    await set_pusher(bob, gateway, "bob-key")
    # The same users through the other instance (same database, same tokens).
    alice_there = RoomUser(second, alice.user_id, alice.headers["Authorization"][7:])
    alice_there._txn = 1000
    sent = []
    for i in range(10):
        sender = alice if i % 2 else alice_there
        sent.append(await sender.say(room_id, f"message {i}"))
    await gateway.wait_for(len(sent))
    await asyncio.sleep(QUIET_S)
    assert sorted(n["event_id"] for n in gateway.received) == sorted(sent)


async def test_retention_deletes_old_read_then_old_unread_actions(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice, bob, room_id = await two_in_a_room(client)
    read = await alice.say(room_id, "one")
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{read}")
    unread = await alice.say(room_id, "two")
    hs = client.server.app[HOMESERVER]

    async def listed() -> list[str]:
        status, body = await bob.get("/v3/notifications")
        assert status == 200
        return [n["event"]["event_id"] for n in body["notifications"]]

    async def unread_count() -> int:
        status, body = await bob.get("/v3/sync")
        assert status == 200
        count: int = body["rooms"]["join"][room_id]["unread_notifications"]["notification_count"]
        return count

    assert await listed() == [unread, read]
    now = int(time.time() * 1000)
    # Nothing is old enough yet.
    assert await hs.notifications.prune(now) == 0
    assert await listed() == [unread, read]
    # A month on: the read one goes, the unread one stays and still counts.
    assert await hs.notifications.prune(now + 31 * DAY_MS) == 1
    assert await listed() == [unread]
    assert await unread_count() == 1
    # Three months on: unread ones go too.
    assert await hs.notifications.prune(now + 91 * DAY_MS) == 1
    assert await listed() == []
    assert await unread_count() == 0
