"""/relations, /threads and the aggregations bundled with events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


def rel(rel_type: str, event_id: str, body: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": rel_type, "event_id": event_id},
        **extra,
    }


def edit(event_id: str, body: str) -> dict[str, Any]:
    return rel("m.replace", event_id, f"* {body}", **{"m.new_content": {"body": body}})


async def test_relations_pagination_and_recursion(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    root = await alice.say(room_id, "root")
    replies = [await alice.send(room_id, rel("m.thread", root, f"r{i}")) for i in range(5)]
    ref = await alice.send(room_id, rel("m.reference", root))
    nested = await alice.send(room_id, rel("m.reference", replies[0]))
    deeper = await alice.send(room_id, rel("m.reference", nested))
    too_deep = await alice.send(room_id, rel("m.reference", deeper))

    status, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}")
    assert status == 200, body
    assert [e["event_id"] for e in body["chunk"]] == [ref, *reversed(replies)]
    assert "recursion_depth" not in body and "next_batch" not in body

    seen: list[str] = []
    token = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, "dir": "f"}
        if token:
            params["from"] = token
        status, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}/m.thread", **params)
        assert status == 200, body
        seen += [e["event_id"] for e in body["chunk"]]
        token = body.get("next_batch")
        if token is None:
            break
    assert seen == replies

    status, body = await alice.get(
        f"/v1/rooms/{room_id}/relations/{root}/m.thread/m.room.message", limit=1
    )
    assert [e["event_id"] for e in body["chunk"]] == [replies[-1]]
    status, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}/m.thread/m.sticker")
    assert body["chunk"] == []

    status, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}", recurse="true")
    assert body["recursion_depth"] == 3
    ids = {e["event_id"] for e in body["chunk"]}
    assert {nested, deeper} <= ids and too_deep not in ids

    status, body = await alice.get(f"/v1/rooms/{room_id}/relations/$missing")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for params in ({"recurse": "yes"}, {"dir": "sideways"}, {"from": "zzz"}, {"limit": "x"}):
        status, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}", **params)
        assert status == 400, params
    status, _ = await alice.get(f"/v3/rooms/{room_id}/relations/{root}")
    assert status == 404  # v1 only


async def test_bundled_aggregations(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    root = await alice.say(room_id, "root")
    await bob.send(room_id, rel("m.thread", root, "first"))
    latest = await bob.send(room_id, rel("m.thread", root, "second"))
    first_edit = await alice.send(room_id, edit(root, "v2"))
    last_edit = await alice.send(room_id, edit(root, "v3"))
    await bob.send(room_id, edit(root, "hijack"))  # another sender: not an edit
    await alice.send(
        room_id,
        {
            "body": "wrong type",
            "m.new_content": {"body": "x"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root},
        },
        type="org.example.other",
    )
    ref = await bob.send(room_id, rel("m.reference", root))
    redacted_edit = await alice.send(room_id, edit(root, "v4"))
    await alice.redact(room_id, redacted_edit)

    for user in (alice, bob):
        status, event = await user.get(f"/v3/rooms/{room_id}/event/{root}")
        assert status == 200, event
        relations = event["unsigned"]["m.relations"]
        thread = relations["m.thread"]
        assert thread["count"] == 2
        assert thread["latest_event"]["event_id"] == latest
        assert thread["current_user_participated"] is True  # alice sent the root
        replace = relations["m.replace"]
        assert replace["event_id"] == last_edit and replace["content"]["body"] == "* v3"
        assert relations["m.reference"] == {"chunk": [{"event_id": ref}]}
        assert event["content"]["body"] == "root"  # edits are not applied by the server
    assert first_edit != last_edit

    carol = await RoomUser.make(client, "carol")
    await carol.join(room_id)
    _, event = await carol.get(f"/v3/rooms/{room_id}/event/{root}")
    assert event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] is False

    _, body = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit=50)
    by_id = {e["event_id"]: e for e in body["chunk"]}
    assert by_id[root]["unsigned"]["m.relations"]["m.replace"]["event_id"] == last_edit
    _, body = await alice.get(f"/v3/rooms/{room_id}/context/{root}", limit=2)
    assert body["event"]["unsigned"]["m.relations"]["m.thread"]["count"] == 2

    # Redacting the original drops its edit from the bundle.
    await alice.redact(room_id, root)
    _, event = await alice.get(f"/v3/rooms/{room_id}/event/{root}")
    assert "m.replace" not in event["unsigned"].get("m.relations", {})


async def test_threads_list(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    roots = [await alice.say(room_id, f"root {i}") for i in range(3)]
    await alice.send(room_id, rel("m.thread", roots[0], "a"))
    await bob.send(room_id, rel("m.thread", roots[1], "b"))
    await alice.send(room_id, rel("m.thread", roots[2], "c"))
    await alice.send(room_id, rel("m.thread", roots[0], "d"))  # roots[0] most recent

    status, body = await bob.get(f"/v1/rooms/{room_id}/threads")
    assert status == 200, body
    assert [e["event_id"] for e in body["chunk"]] == [roots[0], roots[2], roots[1]]
    assert body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"] == 2

    status, body = await bob.get(f"/v1/rooms/{room_id}/threads", include="participated")
    assert [e["event_id"] for e in body["chunk"]] == [roots[1]]

    pages: list[str] = []
    token = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 1}
        if token:
            params["from"] = token
        status, body = await alice.get(f"/v1/rooms/{room_id}/threads", **params)
        pages += [e["event_id"] for e in body["chunk"]]
        token = body.get("next_batch")
        if token is None:
            break
    assert pages == [roots[0], roots[2], roots[1]]
    for params in ({"include": "mine"}, {"limit": "0"}, {"from": "??"}):
        status, body = await alice.get(f"/v1/rooms/{room_id}/threads", **params)
        assert status == 400, params


async def test_relations_respect_visibility(client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    root = await alice.say(room_id, "root")
    early = await alice.send(room_id, rel("m.thread", root, "early"))
    await bob.join(room_id)
    late = await alice.send(room_id, rel("m.thread", root, "late"))
    status, _ = await bob.get(f"/v1/rooms/{room_id}/relations/{root}")
    assert status == 404  # the parent is hidden from bob
    mid = await alice.say(room_id, "visible parent")
    await alice.send(room_id, rel("m.reference", mid))
    status, body = await bob.get(f"/v1/rooms/{room_id}/relations/{mid}")
    assert status == 200 and len(body["chunk"]) == 1
    _, body = await bob.get(f"/v1/rooms/{room_id}/threads")
    assert body["chunk"] == []  # the only thread root predates bob
    _, body = await alice.get(f"/v1/rooms/{room_id}/relations/{root}")
    assert [e["event_id"] for e in body["chunk"]] == [late, early]


async def test_relations_from_another_room_are_not_bundled(client: TestClient[Any, Any]) -> None:
    """An outsider who learns an event id of a private room cannot attach a thread or a
    reference to it from a room of their own: relations count only within a room."""
    alice = await RoomUser.make(client, "alice")
    mallory = await RoomUser.make(client, "mallory")
    private = await alice.create_room(preset="private_chat")
    root = await alice.say(private, "secret root")
    reply = await alice.send(private, rel("m.thread", root, "inside"))
    outside = await mallory.create_room(preset="public_chat")
    await mallory.state(
        outside, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    for _ in range(2):
        await mallory.send(outside, rel("m.thread", root, "spoofed thread"))
    await mallory.send(outside, rel("m.reference", root, "spoofed reference"))

    def check(event: dict[str, Any]) -> None:
        relations = event["unsigned"]["m.relations"]
        assert relations["m.thread"]["latest_event"]["event_id"] == reply
        assert relations["m.thread"]["latest_event"]["room_id"] == private
        assert relations["m.thread"]["count"] == 1
        assert "m.reference" not in relations

    status, event = await alice.get(f"/v3/rooms/{private}/event/{root}")
    assert status == 200, event
    check(event)
    _, body = await alice.get(f"/v3/rooms/{private}/messages", dir="b", limit=50)
    check(next(e for e in body["chunk"] if e["event_id"] == root))
    _, body = await alice.get(f"/v3/rooms/{private}/context/{root}", limit=2)
    check(body["event"])
    _, body = await alice.get(f"/v1/rooms/{private}/threads")
    assert [e["event_id"] for e in body["chunk"]] == [root]
    check(body["chunk"][0])
    _, body = await alice.get(f"/v1/rooms/{private}/relations/{root}")
    assert [e["event_id"] for e in body["chunk"]] == [reply]
    # Nor does the private root show in the outsider's room.
    _, body = await mallory.get(f"/v1/rooms/{outside}/threads")
    assert body["chunk"] == []
    status, _ = await mallory.get(f"/v1/rooms/{outside}/relations/{root}")
    assert status == 404
