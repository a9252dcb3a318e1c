"""Unread notification counts in /sync, read receipts resetting them, and
/notifications: the push rules evaluated on every event a room gets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import eventually, peer, sees

Client = TestClient[Any, Any]


async def pair(homeserver_client: Callable[..., Any]) -> tuple[RoomUser, RoomUser, str]:
    """alice's group room (three members, so no 1:1 rules) with bob and carol joined."""
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await carol.join(room_id)
    return alice, bob, room_id


async def counts(user: RoomUser, room_id: str, **params: str) -> dict[str, Any]:
    status, body = await user.get("/v3/sync", **params)
    assert status == 200, body
    room: dict[str, Any] = body["rooms"]["join"][room_id]
    return room


def unread(room: dict[str, Any]) -> tuple[int, int]:
    n = room["unread_notifications"]
    return n["notification_count"], n["highlight_count"]


async def test_messages_count_for_others_but_not_the_sender(
    homeserver_client: Callable[..., Any],
) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    assert unread(await counts(bob, room_id)) == (0, 0)
    await alice.say(room_id, "hello")
    await alice.say(room_id, "again")
    assert unread(await counts(bob, room_id)) == (2, 0)
    assert unread(await counts(alice, room_id)) == (0, 0)


async def test_mention_highlights_and_receipt_resets(homeserver_client: Callable[..., Any]) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    first = await alice.say(room_id, "hello")
    mention = await alice.send(
        room_id, {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}}
    )
    await alice.send(room_id, {"msgtype": "m.notice", "body": "bot output"})
    assert unread(await counts(bob, room_id)) == (2, 1)
    # A receipt on an earlier event leaves what came after it unread.
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}")
    assert unread(await counts(bob, room_id)) == (1, 1)
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read.private/{mention}")
    assert unread(await counts(bob, room_id)) == (0, 0)
    await alice.say(room_id, "more")
    assert unread(await counts(bob, room_id)) == (1, 0)


async def test_receipt_wakes_sync_with_new_counts(homeserver_client: Callable[..., Any]) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    last = await alice.say(room_id, "hello")
    status, body = await bob.get("/v3/sync")
    assert unread(body["rooms"]["join"][room_id]) == (1, 0)

    async def read() -> None:
        await asyncio.sleep(0.2)
        await bob.ok("POST", f"/rooms/{room_id}/read_markers", {"m.read": last})

    task = asyncio.create_task(read())
    status, later = await bob.get("/v3/sync", since=body["next_batch"], timeout="10000")
    await task
    assert status == 200
    assert unread(later["rooms"]["join"][room_id]) == (0, 0)


async def test_muted_room_and_edits_do_not_count(homeserver_client: Callable[..., Any]) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    original = await alice.say(room_id, "typo")
    await alice.send(
        room_id,
        {
            "msgtype": "m.text",
            "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    await alice.send(
        room_id,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "x"}},
        type="m.reaction",
    )
    assert unread(await counts(bob, room_id)) == (1, 0)
    await bob.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await alice.say(room_id, "unheard")
    assert unread(await counts(bob, room_id)) == (1, 0)
    # Deleting the room rule makes new messages count again.
    await bob.ok("DELETE", f"/pushrules/global/room/{room_id}")
    await alice.say(room_id, "heard")
    assert unread(await counts(bob, room_id)) == (2, 0)


async def test_one_to_one_and_display_name(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Robert"})
    room_id = await alice.create_room(preset="private_chat", invite=[bob.user_id])
    await bob.join(room_id)
    await alice.say(room_id, "ping robert!")
    assert unread(await counts(bob, room_id)) == (1, 1)
    status, body = await bob.get("/v3/notifications")
    assert status == 200
    # Newest first: the message, then the invite (read: bob joined after it).
    note, invite = body["notifications"]
    assert invite["event"]["type"] == "m.room.member" and invite["read"] is True
    assert note["room_id"] == room_id and note["read"] is False
    assert note["event"]["content"]["body"] == "ping robert!"
    assert "notify" in note["actions"]
    assert {"set_tweak": "highlight"} in note["actions"]


async def test_thread_counts_when_the_filter_asks(homeserver_client: Callable[..., Any]) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    root = await alice.say(room_id, "root")
    await alice.send(
        room_id,
        {
            "msgtype": "m.text",
            "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        },
    )
    assert unread(await counts(bob, room_id)) == (2, 0)
    threaded = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})
    room = await counts(bob, room_id, filter=threaded)
    assert unread(room) == (1, 0)
    assert room["unread_thread_notifications"] == {
        root: {"notification_count": 1, "highlight_count": 0}
    }
    # A receipt in the main timeline leaves the thread unread.
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{root}", {"thread_id": "main"})
    room = await counts(bob, room_id, filter=threaded)
    assert unread(room) == (0, 0) and root in room["unread_thread_notifications"]


async def test_notifications_endpoint(homeserver_client: Callable[..., Any]) -> None:
    alice, bob, room_id = await pair(homeserver_client)
    ids = [await alice.say(room_id, f"m{i}") for i in range(3)]
    await alice.send(
        room_id, {"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": [bob.user_id]}}
    )
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{ids[0]}")
    status, page = await bob.get("/v3/notifications", limit="2")
    assert status == 200
    assert [n["event"]["content"]["body"] for n in page["notifications"]] == ["x", "m2"]
    status, rest = await bob.get("/v3/notifications", limit="5", **{"from": page["next_token"]})
    assert [(n["event"]["event_id"], n["read"]) for n in rest["notifications"]] == [
        (ids[1], False),
        (ids[0], True),
    ]
    assert "next_token" not in rest
    status, high = await bob.get("/v3/notifications", only="highlight")
    assert [n["event"]["content"]["body"] for n in high["notifications"]] == ["x"]
    status, own = await alice.get("/v3/notifications")
    assert status == 200 and own["notifications"] == []
    for params in ({"limit": "x"}, {"limit": "-1"}, {"from": "nonsense"}):
        status, body = await bob.get("/v3/notifications", **params)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", params
    status, body = await bob.client.get("/_matrix/client/v3/notifications"), None
    assert status.status == 401


async def test_notifications_serve_redacted_events_redacted(
    homeserver_client: Callable[..., Any],
) -> None:
    """A notification of an event redacted since carries what every other read path
    does: the pruned content and the redaction, not the original text."""
    alice, bob, room_id = await pair(homeserver_client)
    kept = await alice.say(room_id, "kept")
    secret = await alice.say(room_id, "regretted secret")
    redaction = await alice.redact(room_id, secret)
    status, body = await bob.get("/v3/notifications")
    assert status == 200, body
    by_id = {n["event"]["event_id"]: n["event"] for n in body["notifications"]}
    assert by_id[kept]["content"]["body"] == "kept"
    assert by_id[secret]["content"] == {}
    assert by_id[secret]["unsigned"]["redacted_because"]["event_id"] == redaction
    _, event = await bob.get(f"/v3/rooms/{room_id}/event/{secret}")
    assert event["content"] == by_id[secret]["content"]


async def test_event_over_federation_counts(homeserver_client: Callable[..., Any]) -> None:
    a, b = await peer(homeserver_client), await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}?server_name={a.server.host}:{a.server.port}")
    await alice.send(
        room_id,
        {"msgtype": "m.text", "body": "hi bob", "m.mentions": {"user_ids": [bob.user_id]}},
    )
    await eventually(lambda: sees(bob, room_id, "hi bob"))
    # Two members: the mention rule comes first and highlights.
    assert unread(await counts(bob, room_id)) == (1, 1)


async def test_counts_follow_receipts_back_and_forth(homeserver_client: Callable[..., Any]) -> None:
    """The per-room summary sync reads: new messages add to it, a receipt (newer or
    older than the last) recounts it, and a receipt in one thread leaves the others."""
    alice, bob, room_id = await pair(homeserver_client)
    ids = [await alice.say(room_id, f"m{i}") for i in range(6)]
    assert unread(await counts(bob, room_id)) == (6, 0)
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{ids[4]}")
    assert unread(await counts(bob, room_id)) == (1, 0)
    await alice.say(room_id, "m6")
    assert unread(await counts(bob, room_id)) == (2, 0)
    # A private receipt for an older event: the later public one still covers more.
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read.private/{ids[1]}")
    assert unread(await counts(bob, room_id)) == (2, 0)
    root = ids[0]
    for i in range(3):
        await alice.send(
            room_id,
            {
                "msgtype": "m.text",
                "body": f"t{i}",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root},
            },
        )
    threaded = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})
    room = await counts(bob, room_id, filter=threaded)
    assert unread(room) == (2, 0)
    assert room["unread_thread_notifications"][root]["notification_count"] == 3
    last = await alice.say(room_id, "m7")
    await bob.ok("POST", f"/rooms/{room_id}/receipt/m.read/{last}", {"thread_id": "main"})
    room = await counts(bob, room_id, filter=threaded)
    assert unread(room) == (0, 0)
    assert room["unread_thread_notifications"][root]["notification_count"] == 3
    assert unread(await counts(bob, room_id)) == (3, 0)
