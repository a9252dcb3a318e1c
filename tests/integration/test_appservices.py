"""Application services (bridges) against a real homeserver, over real HTTP both ways:
a tiny application service on loopback, registered with a YAML file as Synapse reads it,
registers bridged users, acts as them, and receives the events of its rooms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homeserver.api.context import HOMESERVER
from homeserver.config import ConfigError
from homeserver.services.appservices.registry import load_registry
from homeserver.services.appservices.sender import AppServiceSender
from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, register_user

Client = TestClient[Any, Any]
AS_TOKEN = "as_secret_token"
HS_TOKEN = "hs_secret_token"
SENDER = "@bridgebot:test.local"
QUIET_S = 1.5  # how long "nothing more arrives" is watched for


class Bridge:
    """An application service on loopback: records transactions and pings, answers
    transactions from a script (then 200), and creates aliases it is asked about."""

    def __init__(self) -> None:
        self.transactions: list[tuple[str, str | None, list[dict[str, Any]]]] = []
        self.bodies: list[dict[str, Any]] = []  # whole transaction bodies, as received
        self.user_queries: list[str] = []
        self.registered_with = "receive_ephemeral"  # the key that turned ephemeral data on
        self.answers: list[int] = []
        self.refused: set[int] = set()  # indexes of transactions answered with an error
        self.pings: list[tuple[str | None, dict[str, Any]]] = []
        self.alias_queries: list[str] = []
        self.hs_url = ""
        self.url = ""
        self._arrived = asyncio.Condition()

    async def transaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.answers.pop(0) if self.answers else 200
        async with self._arrived:
            self.bodies.append(body)
            self.transactions.append(
                (
                    request.match_info["txn_id"],
                    request.headers.get("Authorization"),
                    body["events"],
                )
            )
            if status != 200:
                self.refused.add(len(self.transactions) - 1)
            self._arrived.notify_all()
        return web.json_response({} if status == 200 else {"errcode": "M_UNKNOWN"}, status=status)

    async def ping(self, request: web.Request) -> web.Response:
        self.pings.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    async def room_query(self, request: web.Request) -> web.Response:
        """Create the room with the asked alias as the bridge bot, as bridges do."""
        alias = request.match_info["alias"]
        self.alias_queries.append(alias)
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        localpart = alias[1:].split(":", 1)[0]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.hs_url}{CLIENT_V3}/createRoom",
                json={"room_alias_name": localpart, "preset": "public_chat"},
                headers=auth_header(AS_TOKEN),
            ) as resp,
        ):
            if resp.status != 200:
                return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response({})

    async def user_query(self, request: web.Request) -> web.Response:
        """Register the asked user if it is one the other network has (not `*_nobody`)."""
        user_id = request.match_info["user_id"]
        self.user_queries.append(user_id)
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        localpart = user_id[1:].split(":", 1)[0]
        if localpart.endswith("_nobody"):
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.hs_url}{CLIENT_V3}/register",
                json={"type": "m.login.application_service", "username": localpart},
                headers=auth_header(AS_TOKEN),
            ) as resp,
        ):
            if resp.status != 200:
                return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response({})

    def ephemeral(self, key: str = "ephemeral") -> list[dict[str, Any]]:
        """The ephemeral data of the transactions the bridge took, each txnId once."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for i, ((txn_id, _, _), body) in enumerate(
            zip(self.transactions, self.bodies, strict=True)
        ):
            if i not in self.refused and txn_id not in seen:
                seen.add(txn_id)
                out.extend(body.get(key, []))
        return out

    async def wait_for_ephemeral(
        self, found: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: any(found(e) for e in self.ephemeral()))
        return next(e for e in self.ephemeral() if found(e))

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.transactions) >= count)

    def events(self) -> list[dict[str, Any]]:
        """The events of the transactions the bridge took, each txnId once (as the spec
        tells application services to drop a transaction they already processed)."""
        seen: dict[str, list[dict[str, Any]]] = {}
        out = []
        for i, (txn_id, _, events) in enumerate(self.transactions):
            if i in self.refused:
                continue
            if txn_id in seen:
                # A repeat (the answer was lost, e.g. to a restart) must be the same batch.
                assert [e["event_id"] for e in events] == [e["event_id"] for e in seen[txn_id]]
                continue
            seen[txn_id] = events
            out.extend(events)
        return out

    async def wait_for_event(self, event_id: str, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(
                lambda: any(e["event_id"] == event_id for e in self.events())
            )


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    b = Bridge()
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", b.transaction)
    app.router.add_post("/_matrix/app/v1/ping", b.ping)
    app.router.add_get("/_matrix/app/v1/rooms/{alias}", b.room_query)
    app.router.add_get("/_matrix/app/v1/users/{user_id}", b.user_query)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b.url = f"http://127.0.0.1:{server.port}"
    yield b
    await server.close()


def registration(url: str | None, **changes: Any) -> dict[str, Any]:
    """A registration file like the ones bridges generate."""
    data: dict[str, Any] = {
        "id": "testbridge",
        "url": url,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "bridgebot",
        "rate_limited": False,
        "namespaces": {
            "users": [{"regex": "@bridge_.*:test\\.local", "exclusive": True}],
            "aliases": [{"regex": "#bridge_.*:test\\.local", "exclusive": True}],
            "rooms": [],
        },
        "protocols": ["test"],
    }
    data.update(changes)
    return data


def write_registration(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.fixture
async def server(homeserver_client: Callable[..., Any], bridge: Bridge, tmp_path: Path) -> Client:
    reg = write_registration(tmp_path / "bridge.yaml", registration(bridge.url))
    client: Client = await homeserver_client(
        open_registration=True,
        app_service_config_files=[reg],
        **{"rate_limits.enabled": False},
    )
    bridge.hs_url = str(client.make_url("")).rstrip("/")
    return client


async def as_call(
    client: Client, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    resp = await client.request(
        method,
        f"/_matrix/client{path}",
        json=body if body is not None else {},
        params=params,
        headers=auth_header(AS_TOKEN),
    )
    return resp.status, await resp.json()


async def register_bridged(client: Client, localpart: str) -> str:
    status, body = await as_call(
        client,
        "POST",
        "/v3/register",
        {"type": "m.login.application_service", "username": localpart, "inhibit_login": True},
    )
    assert status == 200, body
    assert "access_token" not in body  # inhibit_login
    return str(body["user_id"])


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
    bob = RoomUser(server, *(await _human(server, "bob2")))
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
    room_id, human = await _room_with(server, bridged)
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
    assert failed_id not in later_ids
    ids = [e["event_id"] for e in bridge.events()]
    assert len(ids) == len(set(ids))


async def test_delivery_resumes_after_restart_without_repeats(
    server: Client, bridge: Bridge
) -> None:
    bridged = await register_bridged(server, "bridge_ivy")
    room_id, human = await _room_with(server, bridged)
    first = await human.say(room_id, "before restart")
    await bridge.wait_for_event(first)
    hs = server.server.app[HOMESERVER]
    await hs.appservice_sender.close()
    during = await human.say(room_id, "while the sender is down")
    hs.appservice_sender = AppServiceSender(hs.db, hs.event_cache, hs.appservices)
    await hs.appservice_sender.start()
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


async def _human(client: Client, localpart: str) -> tuple[str, str]:
    body = await register_user(client, localpart)
    return body["user_id"], body["access_token"]


async def _room_with(client: Client, bridged: str) -> tuple[str, RoomUser]:
    """A room of a new human user that the bridged user joined."""
    human = RoomUser(client, *(await _human(client, "h" + bridged[8:].split(":")[0])))
    room_id = await human.create_room()
    await human.invite(room_id, bridged)
    status, _ = await as_call(client, "POST", f"/v3/rooms/{room_id}/join", user_id=bridged)
    assert status == 200
    return room_id, human


# ---- ephemeral data, user queries, joins by alias


@pytest.fixture(params=["receive_ephemeral", "de.sorunome.msc2409.push_ephemeral"])
async def ephemeral_server(
    request: pytest.FixtureRequest,
    homeserver_client: Callable[..., Any],
    bridge: Bridge,
    tmp_path: Path,
) -> Client:
    """A server whose bridge receives ephemeral data (by the stable or MSC2409's key)."""
    bridge.registered_with = request.param
    data = registration(bridge.url, **{request.param: True})
    reg = write_registration(tmp_path / "bridge.yaml", data)
    client: Client = await homeserver_client(
        open_registration=True,
        app_service_config_files=[reg],
        **{"rate_limits.enabled": False},
    )
    bridge.hs_url = str(client.make_url("")).rstrip("/")
    return client


def _typing_in(room_id: str, user_ids: list[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.typing"
        and e["room_id"] == room_id
        and e["content"] == {"user_ids": user_ids}
    )


def _read_receipt(room_id: str, event_id: str, user_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.receipt"
        and e["room_id"] == room_id
        and user_id in e["content"].get(event_id, {}).get("m.read", {})
    )


async def test_typing_receipts_and_presence_reach_the_bridge(
    ephemeral_server: Client, bridge: Bridge
) -> None:
    server = ephemeral_server
    bridged = await register_bridged(server, "bridge_kim")
    room_id, human = await _room_with(server, bridged)
    other = await human.create_room()
    unseen = await human.say(other, "the bridge is not here")
    seen = await human.say(room_id, "the bridge is here")
    # In the room the bridge is not in first: everything later must not carry it.
    await human.ok("PUT", f"/rooms/{other}/typing/{human.user_id}", {"typing": True})
    await human.ok("POST", f"/rooms/{other}/receipt/m.read/{unseen}", {})
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": True})
    await bridge.wait_for_ephemeral(_typing_in(room_id, [human.user_id]))
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{seen}", {})
    receipt = await bridge.wait_for_ephemeral(_read_receipt(room_id, seen, human.user_id))
    assert isinstance(receipt["content"][seen]["m.read"][human.user_id]["ts"], int)
    # Stopping is sent too: the bridge clears the typing indicator on the other side.
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": False})
    await bridge.wait_for_ephemeral(_typing_in(room_id, []))
    # Presence of users sharing a room with bridged users.
    await human.ok(
        "PUT", f"/presence/{human.user_id}/status", {"presence": "unavailable", "status_msg": "afk"}
    )
    presence = await bridge.wait_for_ephemeral(
        lambda e: (
            e["type"] == "m.presence"
            and e["sender"] == human.user_id
            and e["content"].get("status_msg") == "afk"
        )
    )
    assert presence["content"]["presence"] == "unavailable"
    # Nothing of the room the bridge is not interested in.
    ephemeral = bridge.ephemeral()
    assert not [e for e in ephemeral if e.get("room_id") == other]
    # Transactions carry `events` even when only ephemeral data is new.
    assert all(isinstance(body["events"], list) for body in bridge.bodies)
    # Registered with MSC2409's key, the list is also under MSC2409's name.
    unstable = bridge.ephemeral("de.sorunome.msc2409.ephemeral")
    assert unstable == (ephemeral if bridge.registered_with != "receive_ephemeral" else [])


async def test_receipts_made_while_the_sender_is_down_arrive_after_restart(
    ephemeral_server: Client, bridge: Bridge
) -> None:
    server = ephemeral_server
    bridged = await register_bridged(server, "bridge_lee")
    room_id, human = await _room_with(server, bridged)
    first = await human.say(room_id, "one")
    await bridge.wait_for_event(first)
    hs = server.server.app[HOMESERVER]
    await hs.appservice_sender.close()
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}", {})
    hs.appservice_sender = AppServiceSender(
        hs.db, hs.event_cache, hs.appservices, typing=hs.typing, presence=hs.presence
    )
    await hs.appservice_sender.start()
    await bridge.wait_for_ephemeral(_read_receipt(room_id, first, human.user_id))
    receipts = [e for e in bridge.ephemeral() if _read_receipt(room_id, first, human.user_id)(e)]
    assert len(receipts) == 1


async def test_no_ephemeral_data_without_receive_ephemeral(server: Client, bridge: Bridge) -> None:
    bridged = await register_bridged(server, "bridge_max")
    room_id, human = await _room_with(server, bridged)
    hello = await human.say(room_id, "hello")
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": True})
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{hello}", {})
    await human.ok("PUT", f"/presence/{human.user_id}/status", {"presence": "online"})
    after = await human.say(room_id, "after the typing and the receipt")
    await bridge.wait_for_event(after)
    await asyncio.sleep(QUIET_S)
    assert bridge.bodies and not [b for b in bridge.bodies if "ephemeral" in b]
    # No transaction was sent for ephemeral data alone.
    assert all(body["events"] for body in bridge.bodies)


async def test_a_missing_bridged_user_is_asked_for_and_can_be_invited(
    server: Client, bridge: Bridge
) -> None:
    human = RoomUser(server, *(await _human(server, "nina")))
    room_id = await human.create_room()
    ghost = "@bridge_oscar:test.local"
    resp = await server.post(
        f"{CLIENT_V3}/rooms/{room_id}/invite", json={"user_id": ghost}, headers=human.headers
    )
    assert resp.status == 200, await resp.text()
    assert bridge.user_queries == [ghost]
    # The bridge created it: the invite is real, and the ghost can join.
    status, _ = await as_call(server, "POST", f"/v3/rooms/{room_id}/join", user_id=ghost)
    assert status == 200
    # A user the bridge does not know stays unknown, and is not invited.
    nobody = "@bridge_nobody:test.local"
    resp = await server.post(
        f"{CLIENT_V3}/rooms/{room_id}/invite", json={"user_id": nobody}, headers=human.headers
    )
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")
    assert bridge.user_queries == [ghost, nobody]
    # Profile lookups ask too; existing users and users outside the namespace are not asked.
    resp = await server.get(f"{CLIENT_V3}/profile/%40bridge_pia:test.local")
    assert resp.status == 200, await resp.text()
    resp = await server.get(f"{CLIENT_V3}/profile/%40bridge_oscar:test.local")
    assert resp.status == 200
    resp = await server.get(f"{CLIENT_V3}/profile/%40stranger:test.local")
    assert resp.status == 404
    assert bridge.user_queries == [ghost, nobody, "@bridge_pia:test.local"]
    # createRoom's invites too.
    resp = await server.post(
        f"{CLIENT_V3}/createRoom",
        json={"invite": ["@bridge_quinn:test.local"], "is_direct": True},
        headers=human.headers,
    )
    assert resp.status == 200, await resp.text()
    dm = (await resp.json())["room_id"]
    status, member = await human.get(f"/v3/rooms/{dm}/state/m.room.member/@bridge_quinn:test.local")
    assert (status, member.get("membership")) == (200, "invite"), member
    assert bridge.user_queries[-1] == "@bridge_quinn:test.local"


async def test_joining_a_namespaced_alias_asks_the_service(server: Client, bridge: Bridge) -> None:
    human = RoomUser(server, *(await _human(server, "rita")))
    resp = await server.post(f"{CLIENT_V3}/join/%23bridge_hall:test.local", headers=human.headers)
    assert resp.status == 200, await resp.text()
    assert bridge.alias_queries == ["#bridge_hall:test.local"]
    room_id = (await resp.json())["room_id"]
    status, rooms = await human.get("/v3/joined_rooms")
    assert status == 200 and room_id in rooms["joined_rooms"]
    # Outside the namespace, an unknown alias is 404 without asking.
    resp = await server.post(f"{CLIENT_V3}/join/%23nowhere:test.local", headers=human.headers)
    assert resp.status == 404
    assert bridge.alias_queries == ["#bridge_hall:test.local"]
