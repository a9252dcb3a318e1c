"""Server-side search: matching, who may find what, ordering, pagination, context,
groups and state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def search(
    user: RoomUser, criteria: dict[str, Any], next_batch: str | None = None, version: str = "v3"
) -> dict[str, Any]:
    params = {"next_batch": next_batch} if next_batch else None
    status, body = await call(
        user.client,
        "POST",
        f"/{version}/search",
        {"search_categories": {"room_events": criteria}},
        headers=user.headers,
        params=params,
    )
    assert status == 200, body
    result: dict[str, Any] = body["search_categories"]["room_events"]
    return result


def bodies(result: dict[str, Any]) -> list[str]:
    return [r["result"]["content"].get("body", "") for r in result["results"]]


async def test_finds_words_and_prefixes_in_joined_rooms_only(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat", name="Deployment chat")
    secret = await alice.create_room(preset="private_chat")
    await bob.join(room)
    await alice.say(room, "The deployment failed again")
    await alice.say(room, "Lunch at noon?")
    await alice.say(secret, "deployment keys are here")
    redacted = await alice.say(room, "deploy password hunter2")
    await alice.redact(room, redacted)

    result = await search(bob, {"search_term": "deploy"})
    assert bodies(result) == ["The deployment failed again", ""]
    assert result["count"] == 2
    names = [r["result"]["content"].get("name") for r in result["results"]]
    assert "Deployment chat" in names
    assert "deployment" in result["highlights"] or "Deployment" in result["highlights"]
    assert "deploy" in result["highlights"]
    result = await search(alice, {"search_term": "DEPLOYMENT keys"}, version="r0")
    assert bodies(result) == ["deployment keys are here"]
    result = await search(bob, {"search_term": "deploy", "keys": ["content.body"]})
    assert bodies(result) == ["The deployment failed again"]
    result = await search(bob, {"search_term": "   "})
    assert result["results"] == [] and result["count"] == 0


async def test_history_visibility_and_leaving(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat")
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    await alice.say(room, "apple before bob")
    await bob.join(room)
    await alice.say(room, "apple while bob is here")
    await bob.leave(room)
    await alice.say(room, "apple after bob left")
    result = await search(bob, {"search_term": "apple"})
    assert bodies(result) == ["apple while bob is here"]


async def test_count_covers_only_what_the_searcher_may_see(client: Client) -> None:
    """`count` counts the results the searcher may see, not every match in the room:
    history before they joined, while they were away and after a ban stays hidden."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room = await alice.create_room(preset="public_chat")
    await alice.state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    for i in range(3):
        await alice.say(room, f"pear before bob {i}")
    await bob.join(room)
    await alice.say(room, "pear while bob is here")
    await bob.leave(room)
    for i in range(2):
        await alice.say(room, f"pear while bob is away {i}")
    await bob.join(room)
    await alice.say(room, "pear after bob is back")
    banned = await alice.create_room(preset="public_chat")
    await bob.join(banned)
    await alice.say(banned, "pear before the ban")
    await alice.ok("POST", f"/rooms/{banned}/ban", {"user_id": bob.user_id})
    await alice.say(banned, "pear after the ban")

    visible = ["pear after bob is back", "pear before the ban", "pear while bob is here"]
    for order in ("recent", "rank"):
        result = await search(bob, {"search_term": "pear", "order_by": order})
        assert sorted(bodies(result)) == visible, order
        assert result["count"] == 3, order
        result = await search(
            bob, {"search_term": "pear", "order_by": order, "filter": {"limit": 1}}
        )
        assert result["count"] == 3, order
    result = await search(alice, {"search_term": "pear"})
    assert result["count"] == 9


async def test_filters_order_and_pagination(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    one = await alice.create_room(preset="public_chat")
    two = await alice.create_room(preset="public_chat")
    await bob.join(one)
    for i in range(5):
        await alice.say(one, f"kiwi number {i}")
    await bob.say(one, "kiwi kiwi kiwi from bob")
    await alice.say(two, "kiwi in room two")

    result = await search(alice, {"search_term": "kiwi", "order_by": "recent"})
    assert bodies(result)[0] == "kiwi in room two" and result["count"] == 7
    result = await search(alice, {"search_term": "kiwi", "order_by": "rank"})
    assert bodies(result)[0] == "kiwi kiwi kiwi from bob"
    result = await search(alice, {"search_term": "kiwi", "filter": {"senders": [bob.user_id]}})
    assert bodies(result) == ["kiwi kiwi kiwi from bob"]
    result = await search(alice, {"search_term": "kiwi", "filter": {"not_rooms": [one]}})
    assert bodies(result) == ["kiwi in room two"]
    result = await search(alice, {"search_term": "kiwi", "filter": {"rooms": [two]}})
    assert bodies(result) == ["kiwi in room two"]
    result = await search(alice, {"search_term": "kiwi", "filter": {"not_types": ["m.room.*"]}})
    assert result["results"] == []

    for order in ("recent", "rank"):
        seen: list[str] = []
        token = None
        while True:
            criteria = {"search_term": "kiwi", "order_by": order, "filter": {"limit": 3}}
            result = await search(alice, criteria, token)
            assert len(result["results"]) <= 3
            seen += [r["result"]["event_id"] for r in result["results"]]
            token = result.get("next_batch")
            if token is None:
                break
        assert len(seen) == len(set(seen)) == 7, order


async def test_context_groups_and_state(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(preset="public_chat", name="Orchard")
    other = await alice.create_room(preset="public_chat")
    await alice.say(room, "one")
    await alice.say(room, "two")
    await alice.say(room, "pear here")
    await alice.say(room, "three")
    await alice.say(other, "pear there")
    result = await search(
        alice,
        {
            "search_term": "pear",
            "order_by": "recent",
            "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": True},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            "include_state": True,
        },
    )
    first, second = result["results"]
    assert first["result"]["content"]["body"] == "pear there"
    context = second["context"]
    assert [e["content"]["body"] for e in context["events_before"]] == ["two", "one"]
    assert [e["content"]["body"] for e in context["events_after"]] == ["three"]
    assert context["start"] and context["end"]
    assert alice.user_id in context["profile_info"]
    groups = result["groups"]
    assert groups["room_id"][room]["results"] == [second["result"]["event_id"]]
    assert groups["room_id"][other]["order"] == 1
    assert len(groups["sender"][alice.user_id]["results"]) == 2
    names = [e["content"].get("name") for e in result["state"][room]]
    assert "Orchard" in names and set(result["state"]) == {room, other}


async def test_bad_requests(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    headers = alice.headers
    status, body = await call(client, "POST", "/v3/search", data=b"{{", headers=headers)
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    cases: list[dict[str, Any]] = [
        {},
        {"search_categories": []},
        {"search_categories": {"room_events": {}}},
        {"search_categories": {"room_events": {"search_term": 1}}},
        {"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}},
        {"search_categories": {"room_events": {"search_term": "x", "order_by": "best"}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": 0}}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": {"rooms": "!a"}}}},
        {
            "search_categories": {
                "room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}
            }
        },
        {
            "search_categories": {
                "room_events": {"search_term": "x", "event_context": {"before_limit": -1}}
            }
        },
    ]
    for bad in cases:
        status, body = await call(client, "POST", "/v3/search", bad, headers=headers)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", bad
    status, body = await call(
        client,
        "POST",
        "/v3/search",
        {"search_categories": {"room_events": {"search_term": "x"}}},
        headers=headers,
        params={"next_batch": "junk"},
    )
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await call(client, "POST", "/v3/search", {"search_categories": {}})
    assert status == 401
    status, body = await call(
        client, "POST", "/v3/search", {"search_categories": {}}, headers=headers
    )
    assert (status, body) == (200, {"search_categories": {}})


async def test_hostile_text_is_stored_and_searched_safely(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room = await alice.create_room(preset="public_chat")
    # jsonb refuses \u0000: the event is stored all the same, just not searchable.
    await alice.say(room, "nul\u0000byte melon")
    await alice.say(room, "o'neil said: melon & (grape) | !fig <-> 'x':*")
    for term in ("o'neil", "melon & | !", "(grape)", "'x':*", "fig<->", "::", "ü", "a" * 3000):
        result = await search(alice, {"search_term": term})
        assert isinstance(result["results"], list), term
    result = await search(alice, {"search_term": "melon"})
    assert len(result["results"]) == 1
