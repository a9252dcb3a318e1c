"""History visibility on every read path: each setting, a user who joined later, a
user who left, and non-members."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.timeline.visibility import filter_visible
from homeserver.storage.rooms import events as event_store
from tests.integration.conftest import RoomUser


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def history(user: RoomUser, room_id: str) -> tuple[int, Any]:
    return await user.get(f"/v3/rooms/{room_id}/messages", dir="f", limit=100)


EXPECTED = {
    "joined": ["while joined"],
    "invited": ["while invited", "while joined"],
    "shared": ["before invite", "while invited", "while joined"],
    "world_readable": ["before invite", "while invited", "while joined", "after leave"],
}


@pytest.mark.parametrize("visibility", list(EXPECTED))
async def test_departed_user_sees_what_visibility_allows(
    client: TestClient[Any, Any], visibility: str
) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    eve = await RoomUser.make(client, "eve")
    room_id = await alice.create_room(preset="private_chat")
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": visibility})
    await alice.state(room_id, "m.room.topic", {"topic": "old"})
    hidden = await alice.say(room_id, "before invite")
    await alice.invite(room_id, bob.user_id)
    await alice.say(room_id, "while invited")
    await bob.join(room_id)
    joined = await alice.say(room_id, "while joined")
    await bob.leave(room_id)
    after = await alice.say(room_id, "after leave")
    await alice.state(room_id, "m.room.topic", {"topic": "new"})

    status, body = await history(bob, room_id)
    assert status == 200, body
    assert bodies(body["chunk"]) == EXPECTED[visibility]
    own = [e for e in body["chunk"] if e["type"] == "m.room.member"]
    assert {e["content"]["membership"] for e in own if e["state_key"] == bob.user_id} >= {
        "join",
        "leave",
    }
    status, body = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit=100)
    assert bodies(body["chunk"]) == list(reversed(EXPECTED[visibility]))

    # The same answer on every other path that hands out events.
    status, body = await bob.get(f"/v3/rooms/{room_id}/event/{hidden}")
    assert status == (200 if visibility in ("shared", "world_readable") else 404)
    status, body = await bob.get(f"/v3/rooms/{room_id}/context/{after}")
    assert status == (200 if visibility == "world_readable" else 404)
    status, body = await bob.get(f"/v3/rooms/{room_id}/context/{joined}", limit=60)
    assert status == 200
    seen = bodies([*reversed(body["events_before"]), body["event"], *body["events_after"]])
    assert seen == EXPECTED[visibility]
    status, body = await bob.get(f"/v3/rooms/{room_id}/event/{joined}")
    assert status == 200 and body["unsigned"]["membership"] == "join"

    # State as it was when bob left, unless the room is world-readable.
    status, body = await bob.get(f"/v3/rooms/{room_id}/state/m.room.topic")
    expected_topic = "new" if visibility == "world_readable" else "old"
    assert status == 200 and body == {"topic": expected_topic}
    status, body = await bob.get(f"/v3/rooms/{room_id}/state")
    assert status == 200
    topics = [e["content"]["topic"] for e in body if e["type"] == "m.room.topic"]
    assert topics == [expected_topic]
    status, body = await bob.get(f"/v3/rooms/{room_id}/members")
    assert status == 200
    bob_member = [e for e in body["chunk"] if e["state_key"] == bob.user_id]
    assert bob_member[0]["content"]["membership"] == "leave"

    # A stranger: everything when world-readable, nothing otherwise. Paths naming an
    # event answer as for an event that is not there (the spec's 404), revealing nothing.
    for path, refused in (
        (f"/v3/rooms/{room_id}/messages", 403),
        (f"/v3/rooms/{room_id}/state", 403),
        (f"/v3/rooms/{room_id}/state/m.room.topic", 403),
        (f"/v3/rooms/{room_id}/members", 403),
        (f"/v3/rooms/{room_id}/joined_members", 403),
        (f"/v3/rooms/{room_id}/event/{joined}", 404),
        (f"/v3/rooms/{room_id}/context/{joined}", 404),
        (f"/v1/rooms/{room_id}/relations/{joined}", 404),
        (f"/v1/rooms/{room_id}/threads", 403),
    ):
        status, body = await eve.get(path)
        if visibility == "world_readable":
            assert status == 200, (path, body)
        else:
            errcode = "M_FORBIDDEN" if refused == 403 else "M_NOT_FOUND"
            assert (status, body["errcode"]) == (refused, errcode), path
    if visibility == "world_readable":
        status, body = await history(eve, room_id)
        assert bodies(body["chunk"]) == EXPECTED["world_readable"]


async def test_joined_later_sees_per_visibility(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    carol = await RoomUser.make(client, "carol")
    room_id = await alice.create_room(preset="public_chat")
    await alice.say(room_id, "shared era")
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    await alice.say(room_id, "joined era")
    await carol.join(room_id)
    await alice.say(room_id, "carol is here")
    status, body = await history(carol, room_id)
    assert status == 200
    # The history_visibility event itself is visible: the state before it allowed it.
    assert bodies(body["chunk"]) == ["shared era", "carol is here"]
    assert any(e["type"] == "m.room.history_visibility" for e in body["chunk"])
    status, body = await carol.get(f"/v3/rooms/{room_id}/members", membership="join")
    assert {e["state_key"] for e in body["chunk"]} == {alice.user_id, carol.user_id}
    status, body = await carol.get(f"/v3/rooms/{room_id}/joined_members")
    assert set(body["joined"]) == {alice.user_id, carol.user_id}


async def test_members_filters_and_at(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    status, body = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit=1)
    at = body["start"]
    await bob.leave(room_id)
    await alice.invite(room_id, carol.user_id)

    async def members(**params: Any) -> dict[str, str]:
        status, body = await alice.get(f"/v3/rooms/{room_id}/members", **params)
        assert status == 200, body
        return {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}

    assert await members() == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "invite"}
    assert await members(membership="invite") == {carol.user_id: "invite"}
    assert set(await members(not_membership="join")) == {bob.user_id, carol.user_id}
    assert set(await members(membership="join", not_membership="leave")) == {
        alice.user_id,
        carol.user_id,
    }
    assert await members(at=at) == {alice.user_id: "join", bob.user_id: "join"}
    for params in ({"membership": "nope"}, {"not_membership": "x"}, {"at": "bad"}):
        status, body = await alice.get(f"/v3/rooms/{room_id}/members", **params)
        assert status == 400, params
    status, body = await alice.get(f"/v3/rooms/{room_id}/joined_members")
    # Unset display name and avatar are absent (the schema has strings), not null.
    assert body["joined"] == {alice.user_id: {}}


async def test_state_endpoints(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(name="Hall")
    await alice.state(room_id, "org.example.thing", {"v": 1}, key="some/key")
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.name")
    assert status == 200 and body == {"name": "Hall"}
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.name/", format="event")
    assert status == 200 and body["type"] == "m.room.name" and body["state_key"] == ""
    status, body = await alice.get(f"/r0/rooms/{room_id}/state/org.example.thing/some/key")
    assert status == 200 and body == {"v": 1}
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.topic")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await alice.get(f"/v3/rooms/{room_id}/state/m.room.name", format="xml")
    assert status == 400
    status, body = await alice.get("/v3/rooms/!nowhere:test.local/state")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    for path in (
        "/v3/rooms/!nowhere:test.local/event/$x",
        "/v3/rooms/!nowhere:test.local/context/$x",
    ):
        status, body = await alice.get(path)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), path
    status, body = await alice.get(f"/v3/rooms/{room_id}/state")
    assert {e["type"] for e in body} >= {"m.room.create", "m.room.name", "org.example.thing"}


async def test_filter_visible_batches_queries(client: TestClient[Any, Any]) -> None:
    """A page of events costs a constant number of queries, not one per event."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    ids = [await alice.say(room_id, str(i)) for i in range(5)]
    await bob.join(room_id)
    ids += [await alice.say(room_id, str(i)) for i in range(5, 100)]
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    ids += [await alice.say(room_id, str(i)) for i in range(100, 110)]
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, ids)
        queries: list[str] = []
        original = conn.execute

        async def counting(query: Any, *args: Any, **kwargs: Any) -> Any:
            queries.append(str(query))
            return await original(query, *args, **kwargs)

        conn.execute = counting
        visible = await filter_visible(conn, hs.event_cache, bob.user_id, list(rows.values()))
    assert len(visible.rows) == 110
    assert len(queries) <= 4, queries
    assert json.dumps(visible.memberships)  # memberships are plain strings


async def test_events_before_joining_say_membership_leave(client: TestClient[Any, Any]) -> None:
    """MSC4115: each event carries the requester's membership at it; shared history from
    before the user joined says `leave`, in /sync, /messages, /context, /event, /search."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    before = await alice.say(room_id, "before bob")
    await bob.join(room_id)
    after = await alice.say(room_id, "after bob")

    def memberships(events: list[dict[str, Any]]) -> dict[str, str | None]:
        return {e["event_id"]: e.get("unsigned", {}).get("membership") for e in events}

    status, synced = await bob.get("/v3/sync", timeout="0")
    assert status == 200
    in_sync = memberships(synced["rooms"]["join"][room_id]["timeline"]["events"])
    status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert status == 200
    in_messages = memberships(page["chunk"])
    status, context = await bob.get(f"/v3/rooms/{room_id}/context/{after}", limit="10")
    assert status == 200
    in_context = memberships([*context["events_before"], context["event"]])
    status, single = await bob.get(f"/v3/rooms/{room_id}/event/{before}")
    assert status == 200
    resp = await bob.client.post(
        "/_matrix/client/v3/search",
        json={"search_categories": {"room_events": {"search_term": "bob"}}},
        headers=bob.headers,
    )
    found = (await resp.json())["search_categories"]["room_events"]["results"]
    in_search = memberships([r["result"] for r in found])
    assert set(in_search) == {before, after}
    for seen in (in_sync, in_messages, in_context, in_search, memberships([single])):
        assert seen[before] == "leave", seen
    for seen in (in_sync, in_messages, in_context, in_search):
        assert seen[after] == "join", seen
        assert set(seen.values()) <= {"join", "leave"}, seen
