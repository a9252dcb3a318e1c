"""/messages, /context, /event and timestamp_to_event: pagination in both directions
loses and repeats nothing, tokens are checked, filters apply."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.timeline import timeline
from tests.integration.conftest import RoomUser


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def walk(user: RoomUser, room_id: str, direction: str, **params: Any) -> list[dict]:
    """Every event /messages hands out, following `end` until it is omitted."""
    events: list[dict] = []
    token = params.pop("from", None)
    for _ in range(500):
        query = {"dir": direction, **params}
        if token is not None:
            query["from"] = token
        status, body = await user.get(f"/v3/rooms/{room_id}/messages", **query)
        assert status == 200, body
        events.extend(body["chunk"])
        if "end" not in body:
            return events
        token = body["end"]
    raise AssertionError("pagination did not end")


async def test_paginate_150_messages_back_and_forth(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(preset="public_chat")
    sent = []
    for i in range(150):
        sent.append(await alice.say(room_id, f"message {i}"))
    redaction = await alice.redact(room_id, sent[10])
    edits = []
    for i in (20, 21, 22):
        edits.append(
            await alice.send(
                room_id,
                {
                    "msgtype": "m.text",
                    "body": "* edited",
                    "m.new_content": {"msgtype": "m.text", "body": "edited"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": sent[i]},
                },
            )
        )
    backwards = await walk(alice, room_id, "b", limit=7)
    ids = [e["event_id"] for e in backwards]
    assert len(ids) == len(set(ids)), "duplicates paginating backwards"
    assert ids[0] == edits[-1]
    assert backwards[-1]["type"] == "m.room.create"
    assert set(sent) | {redaction, *edits} <= set(ids)

    forwards = await walk(alice, room_id, "f", limit=9)
    assert [e["event_id"] for e in forwards] == list(reversed(ids))

    by_id = {e["event_id"]: e for e in backwards}
    redacted = by_id[sent[10]]
    assert redacted["content"] == {}
    assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction
    # Edits leave the original alone and are bundled with it.
    assert by_id[sent[20]]["content"]["body"] == "message 20"
    assert by_id[sent[20]]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edits[0]
    assert by_id[sent[20]]["unsigned"]["membership"] == "join"

    # From the end token of a backwards page, forwards again reaches the present.
    status, body = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit=5)
    assert status == 200
    middle = body["end"]
    rest = await walk(alice, room_id, "f", **{"from": middle, "limit": 2})
    assert [e["event_id"] for e in rest] == list(reversed(ids[:5]))
    # `to` stops a page.
    status, body = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", to=middle, limit=100)
    assert [e["event_id"] for e in body["chunk"]] == ids[:5]
    assert "end" not in body


async def test_r0_prefix_sync_tokens_and_bad_tokens(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    first = await alice.say(room_id, "one")
    await alice.say(room_id, "two")
    status, body = await alice.get(f"/r0/rooms/{room_id}/messages", dir="b", limit=1)
    assert status == 200
    assert body["chunk"][0]["content"]["body"] == "two"
    assert body["start"].startswith("t")

    # A sync stream token ("s<stream>_...") is accepted and converted to a position.
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        positions = await timeline.positions_of(conn, [first])
    stream_token = f"s{positions[first].stream}_0_0_0_0_0_0"
    status, body = await alice.get(
        f"/v3/rooms/{room_id}/messages", dir="b", limit=1, **{"from": stream_token}
    )
    assert status == 200, body
    assert [e["event_id"] for e in body["chunk"]] == [first]
    assert body["start"] == stream_token
    status, body = await alice.get(
        f"/v3/rooms/{room_id}/messages", dir="f", limit=5, **{"from": stream_token}
    )
    assert [e["content"].get("body") for e in body["chunk"]] == ["two"]

    for bad in ("garbage", "t1", "t1_x", "s", "sX1", "t99999999999999999999_1", ""):
        status, body = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", **{"from": bad})
        assert status == 400, (bad, body)
        assert body["errcode"] == "M_INVALID_PARAM"
    for params in ({"dir": "x"}, {"limit": "ten"}, {"limit": "-1"}, {"to": "nope"}):
        status, body = await alice.get(f"/v3/rooms/{room_id}/messages", **params)
        assert status == 400, (params, body)
    status, body = await alice.get(f"/v3/rooms/{room_id}/messages", filter="{not json")
    assert status == 400
    status, body = await alice.get(
        f"/v3/rooms/{room_id}/messages", filter=json.dumps({"types": "m.room.message"})
    )
    assert status == 400


async def test_filters_and_lazy_members(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await alice.say(room_id, "from alice")
    await bob.say(room_id, "from bob")
    await alice.send(room_id, {"msgtype": "m.image", "body": "pic", "url": "mxc://x/y"})
    await alice.state(room_id, "m.room.topic", {"topic": "t"})

    async def chunk(filter_: dict[str, Any]) -> list[dict]:
        status, body = await alice.get(
            f"/v3/rooms/{room_id}/messages", dir="b", limit=50, filter=json.dumps(filter_)
        )
        assert status == 200, body
        return list(body["chunk"])

    assert {e["sender"] for e in await chunk({"senders": [bob.user_id]})} == {bob.user_id}
    messages = await chunk({"types": ["m.room.mess*"]})
    assert messages and all(e["type"] == "m.room.message" for e in messages)
    assert not any(e["type"].startswith("m.room.") for e in await chunk({"not_types": ["m.*"]}))
    urls = await chunk({"contains_url": True})
    assert [e["content"]["body"] for e in urls] == ["pic"]
    status, body = await alice.get(
        f"/v3/rooms/{room_id}/messages",
        dir="b",
        limit=2,
        filter=json.dumps({"lazy_load_members": True, "types": ["m.room.message"]}),
    )
    assert status == 200
    senders = {e["sender"] for e in body["chunk"]}
    assert senders and {m["state_key"] for m in body["state"]} == senders
    assert all(m["type"] == "m.room.member" for m in body["state"])


async def test_lazy_members_cover_every_sender_of_the_page(
    client: TestClient[Any, Any],
) -> None:
    """A lazy-loading page carries the member event of each of its senders, the
    requester's own included, even when the page reaches back before they joined."""
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await alice.say(room_id, "before bob")
    await bob.join(room_id)
    await bob.say(room_id, "from bob")
    await alice.say(room_id, "after bob")
    lazy = json.dumps({"lazy_load_members": True})
    for direction in ("b", "f"):
        status, body = await bob.get(
            f"/v3/rooms/{room_id}/messages", dir=direction, limit=50, filter=lazy
        )
        assert status == 200, body
        assert {e["sender"] for e in body["chunk"]} == {alice.user_id, bob.user_id}
        members = {m["state_key"]: m["content"] for m in body["state"]}
        assert set(members) == {alice.user_id, bob.user_id}, direction
        assert members[bob.user_id]["membership"] == "join"


async def test_context_event_and_timestamp(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    ids = [await alice.say(room_id, f"m{i}") for i in range(10)]

    status, body = await alice.get(f"/v3/rooms/{room_id}/context/{ids[5]}", limit=4)
    assert status == 200, body
    assert body["event"]["event_id"] == ids[5]
    assert [e["event_id"] for e in body["events_before"]] == [ids[4], ids[3]]
    assert [e["event_id"] for e in body["events_after"]] == [ids[6], ids[7]]
    assert any(e["type"] == "m.room.create" for e in body["state"])
    status, page = await alice.get(
        f"/v3/rooms/{room_id}/messages", dir="b", limit=1, **{"from": body["start"]}
    )
    assert [e["event_id"] for e in page["chunk"]] == [ids[2]]
    status, page = await alice.get(
        f"/v3/rooms/{room_id}/messages", dir="f", limit=1, **{"from": body["end"]}
    )
    assert [e["event_id"] for e in page["chunk"]] == [ids[8]]

    status, body = await alice.get(f"/v3/rooms/{room_id}/context/{ids[0]}", limit=0)
    assert status == 200 and body["events_before"] == [] and body["events_after"] == []

    status, body = await alice.get(f"/v3/rooms/{room_id}/event/{ids[3]}")
    assert status == 200 and body["content"]["body"] == "m3"
    for path in (f"/v3/rooms/{room_id}/event/$nope", f"/v3/rooms/{room_id}/context/$nope"):
        status, body = await alice.get(path)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    other = await alice.create_room()
    status, body = await alice.get(f"/v3/rooms/{other}/event/{ids[3]}")
    assert status == 404

    _, event = await alice.get(f"/v3/rooms/{room_id}/event/{ids[4]}")
    ts = event["origin_server_ts"]
    status, body = await alice.get(f"/v1/rooms/{room_id}/timestamp_to_event", ts=str(ts), dir="f")
    assert status == 200, body
    assert body["origin_server_ts"] >= ts
    status, body = await alice.get(
        f"/v1/rooms/{room_id}/timestamp_to_event", ts=str(ts + 10**9), dir="b"
    )
    assert status == 200 and body["event_id"] == ids[9]
    status, body = await alice.get(
        f"/v1/rooms/{room_id}/timestamp_to_event", ts=str(ts + 10**9), dir="f"
    )
    assert status == 404
    for params in ({"ts": "x", "dir": "f"}, {"ts": "1", "dir": "up"}, {"dir": "f"}):
        status, body = await alice.get(f"/v1/rooms/{room_id}/timestamp_to_event", **params)
        assert status == 400, params
    status, _ = await alice.get(f"/v3/rooms/{room_id}/timestamp_to_event", ts="1", dir="f")
    assert status == 404  # v1 only


async def test_forks_at_equal_depth_paginate_exactly_once(client: TestClient[Any, Any]) -> None:
    """Events that share a depth (a fork in the DAG) are ordered by stream position, so
    pages neither repeat nor drop them whatever the page size."""
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    await alice.say(room_id, "before the fork")
    hs = client.app[HOMESERVER]
    forked = []
    async with hs.writer.writer(room_id) as writer:
        base = list(writer.extremities)
        for i in range(7):
            writer.extremities = list(base)
            persisted = await writer.append(
                "m.room.message", alice.user_id, {"msgtype": "m.text", "body": f"fork {i}"}
            )
            forked.append(persisted.event)
    assert len({event.depth for event in forked}) == 1
    merge = await alice.say(room_id, "after the fork")
    for limit in (1, 2, 3, 5):
        backwards = [e["event_id"] for e in await walk(alice, room_id, "b", limit=limit)]
        assert len(backwards) == len(set(backwards))
        assert {e.event_id for e in forked} <= set(backwards)
        assert backwards[0] == merge
        forwards = [e["event_id"] for e in await walk(alice, room_id, "f", limit=limit)]
        assert forwards == list(reversed(backwards))
