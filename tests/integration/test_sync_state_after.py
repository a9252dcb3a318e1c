"""/sync with `use_state_after=true`: rooms carry `state_after`, the state at the
timeline's end (whole on a fresh start, else what changed since the token, the
timeline's own state events included), never `state`; without it nothing changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def sync(user: RoomUser, status: int = 200, **params: Any) -> Any:
    query = {
        k: json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else v
        for k, v in params.items()
    }
    code, body = await user.get("/v3/sync", **query)
    assert code == status, body
    return body


def state_of(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["type"], e["state_key"]): e for e in events}


def topic(events: list[dict[str, Any]]) -> str | None:
    found = state_of(events).get(("m.room.topic", ""))
    return None if found is None else found["content"]["topic"]


def limit(n: int, **timeline: Any) -> dict[str, Any]:
    return {"room": {"timeline": {"limit": n, **timeline}}}


async def test_initial_sync_gets_the_state_at_the_timeline_end(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(topic="one")
    await alice.say(room, "hello")
    await alice.state(room, "m.room.topic", {"topic": "two"})
    await alice.say(room, "bye")

    after = (await sync(alice, filter=limit(2), use_state_after=True))["rooms"]["join"][room]
    assert "state" not in after
    assert [e["content"].get("topic") for e in after["timeline"]["events"]] == ["two", None]
    # The end of the timeline: the topic the timeline itself set, and the whole state.
    assert topic(after["state_after"]["events"]) == "two"
    keys = set(state_of(after["state_after"]["events"]))
    assert {("m.room.create", ""), ("m.room.member", alice.user_id)} <= keys

    # Without the parameter, the old shape: the state at the timeline's start.
    before = (await sync(alice, filter=limit(2)))["rooms"]["join"][room]
    assert "state_after" not in before
    assert topic(before["state"]["events"]) == "one"
    before = (await sync(alice, filter=limit(2), use_state_after=False))["rooms"]["join"][room]
    assert "state_after" not in before and topic(before["state"]["events"]) == "one"


async def test_incremental_state_after_holds_every_change_since_the_token(
    client: Client,
) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room()
    since = (await sync(alice, use_state_after=True))["next_batch"]

    name_id = await alice.state(room, "m.room.name", {"name": "Garden"})
    await alice.say(room, "named it")
    body = await sync(alice, since=since, use_state_after=True)
    entry = body["rooms"]["join"][room]
    assert entry["timeline"]["limited"] is False
    assert name_id in [e["event_id"] for e in entry["timeline"]["events"]]
    # The change is in the timeline, and in state_after too: the client must not
    # take state from the timeline.
    assert [e["event_id"] for e in entry["state_after"]["events"]] == [name_id]
    assert "state" not in entry
    # The default shape sends nothing: the timeline carries the change.
    default = (await sync(alice, since=since))["rooms"]["join"][room]
    assert default["state"]["events"] == []

    # Only a message since: state_after is present, and empty.
    since = body["next_batch"]
    await alice.say(room, "just talk")
    entry = (await sync(alice, since=since, use_state_after=True))["rooms"]["join"][room]
    assert entry["state_after"] == {"events": []}


async def test_state_after_reports_state_a_filtered_timeline_hides(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(topic="old")
    only_messages = limit(10, types=["m.room.message"])
    since = (await sync(alice, filter=only_messages, use_state_after=True))["next_batch"]

    await alice.state(room, "m.room.topic", {"topic": "new"})
    await alice.say(room, "after the topic")
    entry = (await sync(alice, since=since, filter=only_messages, use_state_after=True))["rooms"][
        "join"
    ][room]
    assert [e["type"] for e in entry["timeline"]["events"]] == ["m.room.message"]
    assert topic(entry["state_after"]["events"]) == "new"
    # The old shape has no way to tell: the change is neither in state nor timeline.
    default = (await sync(alice, since=since, filter=only_messages))["rooms"]["join"][room]
    assert topic(default["state"]["events"]) is None


async def test_limited_timeline_state_after_is_the_state_at_its_end(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(topic="t0")
    since = (await sync(alice, use_state_after=True))["next_batch"]
    await alice.state(room, "m.room.topic", {"topic": "t1"})
    for i in range(3):
        await alice.say(room, f"gap {i}")
    await alice.state(room, "m.room.topic", {"topic": "t2"})
    await alice.say(room, "last")

    entry = (await sync(alice, since=since, filter=limit(2), use_state_after=True))["rooms"][
        "join"
    ][room]
    assert entry["timeline"]["limited"] is True
    events = entry["state_after"]["events"]
    assert topic(events) == "t2"
    # A delta: the member and create events did not change.
    assert set(state_of(events)) == {("m.room.topic", "")}
    default = (await sync(alice, since=since, filter=limit(2)))["rooms"]["join"][room]
    assert topic(default["state"]["events"]) == "t1"


async def test_full_state_sends_the_whole_state_after(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(topic="x")
    since = (await sync(alice, use_state_after=True))["next_batch"]
    await alice.say(room, "hi")
    entry = (await sync(alice, since=since, full_state=True, use_state_after=True))["rooms"][
        "join"
    ][room]
    keys = set(state_of(entry["state_after"]["events"]))
    assert {
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id),
    } <= keys


async def test_left_room_carries_state_after(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    since = (await sync(bob, use_state_after=True))["next_batch"]
    await alice.state(room, "m.room.topic", {"topic": "bye bob"})
    await bob.leave(room)
    entry = (await sync(bob, since=since, use_state_after=True))["rooms"]["leave"][room]
    assert "state" not in entry
    state = state_of(entry["state_after"]["events"])
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"
    assert state[("m.room.topic", "")]["content"]["topic"] == "bye bob"


async def test_lazy_members_with_state_after(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat")
    others = [await RoomUser.make(client, f"user{i}") for i in range(7)]
    for user in [bob, *others]:
        await user.join(room)
    for i in range(3):
        await bob.say(room, f"bob {i}")
    lazy = {"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": True}}}

    body = await sync(alice, filter=lazy, use_state_after=True)
    entry = body["rooms"]["join"][room]
    members = {sk for t, sk in state_of(entry["state_after"]["events"]) if t == "m.room.member"}
    heroes = set(entry["summary"]["m.heroes"])
    # The timeline's sender, the user, the heroes: not all nine members.
    assert members == {alice.user_id, bob.user_id} | heroes
    assert len(members) < 9
    assert ("m.room.create", "") in state_of(entry["state_after"]["events"])

    # A kick changes a member who sent nothing: sent anyway. Bob's unchanged member
    # event, which this device has, is not sent again.
    victim = others[0] if others[0].user_id not in heroes else others[-1]
    since = body["next_batch"]
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": victim.user_id})
    await bob.say(room, "again")
    entry = (await sync(alice, since=since, filter=lazy, use_state_after=True))["rooms"]["join"][
        room
    ]
    state = state_of(entry["state_after"]["events"])
    assert state[("m.room.member", victim.user_id)]["content"]["membership"] == "leave"
    assert ("m.room.member", bob.user_id) not in state


async def test_bad_use_state_after(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    code, body = await alice.get("/v3/sync", use_state_after="yes")
    assert (code, body["errcode"]) == (400, "M_INVALID_PARAM")
