"""/sync: initial and incremental syncs, long-polls, gaps, lazy members, leaving,
invites, tokens across restarts, filters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.sync.request import SyncRequest
from homeserver.storage.core.pool import Database
from tests.integration.conftest import (
    CLIENT_V3,
    auth_header,
    make_user,
    serve_process,
    start_process,
)

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


class User:
    def __init__(self, client: Client, user_id: str, token: str) -> None:
        self.client = client
        self.user_id = user_id
        self.headers = auth_header(token)

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.client.request(method, CLIENT_V3 + path, json=body, headers=self.headers)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def sync(self, status: int = 200, prefix: str = CLIENT_V3, **params: Any) -> Any:
        query = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in params.items()}
        resp = await self.client.get(prefix + "/sync", params=query, headers=self.headers)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def create_room(self, **body: Any) -> str:
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def send(self, room_id: str, body: str) -> str:
        txn = f"t{time.monotonic_ns()}"
        result = await self.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )
        return str(result["event_id"])

    async def state(self, room_id: str, event_type: str, content: Any, key: str = "") -> str:
        result = await self.call("PUT", f"/rooms/{room_id}/state/{event_type}/{key}", content)
        return str(result["event_id"])

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/join/{room_id}", {})


async def new_user(client: Client, name: str) -> User:
    user_id, token = await make_user(client, name)
    return User(client, user_id, token)


def bodies(room: Any) -> list[str]:
    return [
        e["content"].get("body")
        for e in room["timeline"]["events"]
        if e["type"] == "m.room.message"
    ]


def state_keys(room: Any, event_type: str = "m.room.member") -> set[str]:
    return {e["state_key"] for e in room["state"]["events"] if e["type"] == event_type}


async def test_initial_then_incremental(client: Client) -> None:
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="Hall")
    await alice.send(room_id, "hello")
    first = await alice.sync()
    room = first["rooms"]["join"][room_id]
    assert bodies(room) == ["hello"]
    assert "room_id" not in room["timeline"]["events"][0]
    state_types = {e["type"] for e in room["state"]["events"]} | {
        e["type"] for e in room["timeline"]["events"]
    }
    assert {"m.room.create", "m.room.member", "m.room.name"} <= state_types
    assert room["summary"]["m.joined_member_count"] == 1
    assert room["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}
    assert "device_one_time_keys_count" in first

    again = await alice.sync(since=first["next_batch"], timeout=0)
    assert "rooms" not in again or room_id not in again["rooms"].get("join", {})
    assert again["next_batch"] == first["next_batch"]

    event_id = await alice.send(room_id, "second")
    later = await alice.sync(since=first["next_batch"], timeout=0)
    events = later["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in events] == [event_id]
    assert events[0]["unsigned"]["transaction_id"].startswith("t")
    assert later["rooms"]["join"][room_id]["timeline"]["limited"] is False

    # full_state: the whole room again, whatever the token.
    full = await alice.sync(since=later["next_batch"], full_state="true")
    room = full["rooms"]["join"][room_id]
    assert room["timeline"]["events"] == []
    assert {"m.room.create", "m.room.name"} <= {e["type"] for e in room["state"]["events"]}


async def test_long_poll_wakes_on_message(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    token = (await bob.sync())["next_batch"]

    poll = asyncio.create_task(bob.sync(since=token, timeout=20000))
    await asyncio.sleep(0.3)
    assert not poll.done()
    started = time.monotonic()
    await alice.send(room_id, "wake up")
    result = await poll
    elapsed = time.monotonic() - started
    assert bodies(result["rooms"]["join"][room_id]) == ["wake up"]
    assert elapsed < 0.5, elapsed


async def test_long_poll_times_out_empty(client: Client) -> None:
    alice = await new_user(client, "alice")
    await alice.create_room()
    token = (await alice.sync())["next_batch"]
    started = time.monotonic()
    result = await alice.sync(since=token, timeout=300)
    assert 0.25 < time.monotonic() - started < 2
    assert result["next_batch"] == token
    assert "rooms" not in result


async def test_limited_timeline_carries_gap_state(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat", name="Before")
    await bob.join(room_id)
    token = (await bob.sync())["next_batch"]
    name_event = await alice.state(room_id, "m.room.name", {"name": "After"})
    for i in range(8):
        await alice.send(room_id, f"m{i}")
    result = await bob.sync(since=token, filter={"room": {"timeline": {"limit": 3}}})
    room = result["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert bodies(room) == ["m5", "m6", "m7"]
    names = [e for e in room["state"]["events"] if e["type"] == "m.room.name"]
    assert [e["event_id"] for e in names] == [name_event]
    assert names[0]["content"] == {"name": "After"}
    # State unchanged in the gap is not repeated.
    assert not [e for e in room["state"]["events"] if e["type"] == "m.room.create"]
    assert room["timeline"]["prev_batch"]

    # /messages continues from prev_batch with the event before the timeline.
    page = await bob.call(
        "GET", f"/rooms/{room_id}/messages?dir=b&limit=1&from={room['timeline']['prev_batch']}"
    )
    assert [e["content"].get("body") for e in page["chunk"]] == ["m4"]


async def test_lazy_loaded_members(client: Client) -> None:
    names = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank")
    users = [await new_user(client, name) for name in names]
    alice, bob, carol, _, erin, _, gina, hank = users
    room_id = await alice.create_room(preset="public_chat", name="Crowd")
    for user in users[1:]:
        await user.join(room_id)
    for i in range(12):
        await alice.send(room_id, f"filler {i}")
    await bob.send(room_id, "from bob")
    await carol.send(room_id, "from carol")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 2}}}
    result = await erin.sync(filter=lazy)
    room = result["rooms"]["join"][room_id]
    senders = {e["sender"] for e in room["timeline"]["events"]}
    assert senders == {bob.user_id, carol.user_id}
    members = state_keys(room)
    heroes = set(room["summary"]["m.heroes"])
    assert senders <= members
    assert members <= senders | heroes | {erin.user_id}
    assert erin.user_id in members  # own membership on a fresh start
    assert gina.user_id not in heroes and gina.user_id not in members
    assert room["summary"]["m.joined_member_count"] == 8

    # The same sender again: their member event is not sent twice to this device...
    await bob.send(room_id, "bob again")
    more = await erin.sync(since=result["next_batch"], filter=lazy)
    assert state_keys(more["rooms"]["join"][room_id]) == set()
    # ...but a new sender's is.
    await hank.send(room_id, "hank speaks")
    more = await erin.sync(since=more["next_batch"], filter=lazy)
    assert state_keys(more["rooms"]["join"][room_id]) == {hank.user_id}
    # include_redundant_members sends them every time.
    await hank.send(room_id, "hank again")
    redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
    again = await erin.sync(since=more["next_batch"], filter=redundant)
    assert state_keys(again["rooms"]["join"][room_id]) == {hank.user_id}
    # A limited timeline still carries the member events of its new senders.
    for i in range(4):
        await gina.send(room_id, f"gina {i}")
    gap = await erin.sync(since=again["next_batch"], filter=lazy)
    gap_room = gap["rooms"]["join"][room_id]
    assert gap_room["timeline"]["limited"] is True
    assert state_keys(gap_room) == {gina.user_id}

    # Without lazy loading every member is in the state.
    full = await erin.sync()
    full_room = full["rooms"]["join"][room_id]
    everyone = state_keys(full_room) | {
        e["state_key"] for e in full_room["timeline"]["events"] if e["type"] == "m.room.member"
    }
    assert everyone == {u.user_id for u in users}


async def test_leaving_moves_room_to_leave(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    token = (await bob.sync())["next_batch"]
    await alice.send(room_id, "before you go")
    await bob.call("POST", f"/rooms/{room_id}/leave", {})
    result = await bob.sync(since=token)
    assert room_id not in result["rooms"].get("join", {})
    left = result["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert events[-1]["type"] == "m.room.member" and events[-1]["content"]["membership"] == "leave"
    assert bodies(left) == ["before you go"]

    await alice.send(room_id, "after you left")
    later = await bob.sync(since=result["next_batch"], timeout=0)
    assert "rooms" not in later

    # Initial syncs show left rooms only on request.
    assert room_id not in (await bob.sync())["rooms"].get("leave", {})
    with_leave = await bob.sync(filter={"room": {"include_leave": True}})
    assert bodies(with_leave["rooms"]["leave"][room_id]) == ["before you go"]


async def test_invite_has_stripped_state(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    token = (await bob.sync())["next_batch"]
    room_id = await alice.create_room(name="Secret club", invite=[bob.user_id])
    result = await bob.sync(since=token, timeout=5000)
    invite = result["rooms"]["invite"][room_id]["invite_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in invite}
    assert ("m.room.create", "") in by_type
    assert ("m.room.join_rules", "") in by_type
    assert by_type[("m.room.name", "")]["content"] == {"name": "Secret club"}
    assert by_type[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    assert by_type[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
    assert set(invite[0]) == {"type", "state_key", "content", "sender"}
    # An invite is not repeated; joining moves the room to `join` with full state.
    await alice.send(room_id, "not for bob yet")
    again = await bob.sync(since=result["next_batch"])
    assert room_id not in again.get("rooms", {}).get("invite", {})
    await bob.join(room_id)
    joined = await bob.sync(since=again["next_batch"])
    room = joined["rooms"]["join"][room_id]
    assert ("m.room.create", "") in {
        (e["type"], e.get("state_key"))
        for e in room["state"]["events"] + room["timeline"]["events"]
    }


async def test_history_visibility_joined_hides_earlier_events(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    await alice.send(room_id, "secret past")
    await bob.join(room_id)
    await alice.send(room_id, "welcome")
    room = (await bob.sync())["rooms"]["join"][room_id]
    assert bodies(room) == ["welcome"]


async def test_bad_tokens_are_rejected(client: Client) -> None:
    alice = await new_user(client, "alice")
    token = (await alice.sync())["next_batch"]
    for garbage in (
        "nonsense",
        "s1_2_3",
        "s1_2_3_4_5_6_7_8",
        "s-1_0_0_0_0_0_0",
        "t1_2",
        "s" + "9" * 30 + "_0_0_0_0_0_0",
    ):
        body = await alice.sync(status=400, since=garbage)
        assert body["errcode"] == "M_INVALID_PARAM"
    parts = token[1:].split("_")
    parts[0] = str(int(parts[0]) + 1000)
    body = await alice.sync(status=400, since="s" + "_".join(parts))
    assert body["errcode"] == "M_INVALID_PARAM"
    assert "future" in body["error"]
    # A typing part ahead of this process is harmless.
    parts = token[1:].split("_")
    parts[3] = str(int(parts[3]) + 10**9)
    await alice.sync(since="s" + "_".join(parts))
    for param, value in (("timeout", "soon"), ("full_state", "yes"), ("set_presence", "away")):
        body = await alice.sync(status=400, **{param: value})
        assert body["errcode"] == "M_INVALID_PARAM"
    body = await alice.sync(status=400, filter="{not json")
    assert body["errcode"] == "M_BAD_JSON"
    body = await alice.sync(status=404, filter="12345")
    assert body["errcode"] == "M_NOT_FOUND"


async def test_filters(client: Client) -> None:
    alice = await new_user(client, "alice")
    kept = await alice.create_room(name="kept")
    dropped = await alice.create_room(name="dropped")
    for i in range(5):
        await alice.send(kept, f"k{i}")
        await alice.send(dropped, f"d{i}")
    await alice.call("PUT", f"/rooms/{kept}/send/m.custom/x1", {"n": 1})
    definition = {
        "room": {
            "not_rooms": [dropped],
            "timeline": {"limit": 3, "types": ["m.room.message"]},
        }
    }
    result = await alice.sync(filter=definition)
    assert set(result["rooms"]["join"]) == {kept}
    room = result["rooms"]["join"][kept]
    assert bodies(room) == ["k2", "k3", "k4"]
    assert room["timeline"]["limited"] is True

    filter_id = (await alice.call("POST", f"/user/{alice.user_id}/filter", definition))["filter_id"]
    by_id = await alice.sync(filter=filter_id, prefix="/_matrix/client/r0")
    assert set(by_id["rooms"]["join"]) == {kept}
    assert bodies(by_id["rooms"]["join"][kept]) == ["k2", "k3", "k4"]


async def test_account_data_in_sync(client: Client) -> None:
    alice = await new_user(client, "alice")
    room_id = await alice.create_room()
    token = (await alice.sync())["next_batch"]
    poll = asyncio.create_task(alice.sync(since=token, timeout=10000))
    await asyncio.sleep(0.2)
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/org.example", {"a": 1})
    result = await asyncio.wait_for(poll, 2)
    assert {"type": "org.example", "content": {"a": 1}} in result["account_data"]["events"]
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{room_id}/tags/u.work", {"order": 0.5})
    result = await alice.sync(since=result["next_batch"])
    events = result["rooms"]["join"][room_id]["account_data"]["events"]
    assert {"type": "m.tag", "content": {"tags": {"u.work": {"order": 0.5}}}} in events


async def test_typing_and_receipts_in_ephemeral(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    token = (await bob.sync())["next_batch"]
    poll = asyncio.create_task(bob.sync(since=token, timeout=10000))
    await asyncio.sleep(0.2)
    await alice.call(
        "PUT", f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": True, "timeout": 10000}
    )
    result = await asyncio.wait_for(poll, 2)
    ephemeral = result["rooms"]["join"][room_id]["ephemeral"]["events"]
    assert {"type": "m.typing", "content": {"user_ids": [alice.user_id]}} in ephemeral

    event_id = await alice.send(room_id, "read me")
    token = (await bob.sync(since=result["next_batch"]))["next_batch"]
    await alice.call("POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {})
    result = await bob.sync(since=token, timeout=5000)
    receipts = [
        e
        for e in result["rooms"]["join"][room_id]["ephemeral"]["events"]
        if e["type"] == "m.receipt"
    ]
    assert alice.user_id in receipts[0]["content"][event_id]["m.read"]


async def test_to_device_delivered_once(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    token = (await bob.sync())["next_batch"]
    await alice.call(
        "PUT",
        "/sendToDevice/org.example.ping/txn1",
        {"messages": {bob.user_id: {"*": {"n": 1}}}},
    )
    result = await bob.sync(since=token, timeout=5000)
    assert result["to_device"]["events"] == [
        {"sender": alice.user_id, "type": "org.example.ping", "content": {"n": 1}}
    ]
    # The same token again (a lost response) gets it again; the next token does not.
    assert (await bob.sync(since=token))["to_device"]["events"]
    assert "to_device" not in await bob.sync(since=result["next_batch"])


@pytest.fixture
async def restartable(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Callable[[], Any]]:
    """Starts servers one after the other on the same database."""
    conninfo = database_factory()
    running: list[tuple[Client, Database]] = []

    async def start() -> Client:
        if running:
            old, old_db = running.pop()
            await old.close()
            await old.app[HOMESERVER].close()
            await old_db.close()
        hs, db = await start_process(tmp_path / "hs", conninfo)
        client = await serve_process(hs)
        running.append((client, db))
        return client

    yield start
    for client, db in running:
        await client.close()
        await client.app[HOMESERVER].close()
        await db.close()


async def test_tokens_survive_a_restart(restartable: Callable[[], Any]) -> None:
    first = await restartable()
    alice_id, alice_token = await make_user(first, "alice")
    bob_id, bob_token = await make_user(first, "bob")
    alice = User(first, alice_id, alice_token)
    bob = User(first, bob_id, bob_token)
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await alice.send(room_id, "one")
    token = (await bob.sync())["next_batch"]
    await alice.send(room_id, "two")

    second = await restartable()
    alice = User(second, alice_id, alice_token)
    bob = User(second, bob_id, bob_token)
    await alice.send(room_id, "three")
    result = await bob.sync(since=token)
    assert bodies(result["rooms"]["join"][room_id]) == ["two", "three"]
    again = await bob.sync(since=result["next_batch"])
    assert "rooms" not in again


async def test_redactions_show_in_later_syncs(client: Client) -> None:
    alice = await new_user(client, "alice")
    room_id = await alice.create_room()
    topic_id = await alice.state(room_id, "m.room.topic", {"topic": "spoilers"})
    message_id = await alice.send(room_id, "oops")
    await alice.sync()  # renders both once
    for target in (topic_id, message_id):
        await alice.call("PUT", f"/rooms/{room_id}/redact/{target}/r{target[1:8]}", {})
    room = (await alice.sync(filter={"room": {"timeline": {"limit": 3}}}))["rooms"]["join"][room_id]
    events = {e["event_id"]: e for e in room["state"]["events"] + room["timeline"]["events"]}
    for target in (topic_id, message_id):
        assert events[target]["content"] == {}
        assert events[target]["unsigned"]["redacted_because"]["type"] == "m.room.redaction"


async def test_noop_incremental_sync_reads_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync whose token is current answers from memory: no database at all."""
    alice = await new_user(client, "alice")
    for i in range(3):
        await alice.send(await alice.create_room(name=f"r{i}"), "hi")
    token = (await alice.sync())["next_batch"]
    token = (await alice.sync(since=token))["next_batch"]
    hs = client.app[HOMESERVER]
    requester = await hs.accounts_auth.authenticate(alice.headers["Authorization"].split()[1])
    borrowed = 0
    real = hs.db.pool.connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal borrowed
        borrowed += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(hs.db.pool, "connection", counting)
    result = await hs.sync.sync(requester, SyncRequest(since=token))
    assert result == {"next_batch": token}
    assert borrowed == 0
