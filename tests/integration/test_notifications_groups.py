"""Unread counts in a room whose members are evaluated and stored in groups: most keep
the default rules and get one outcome together, while members with their own rules,
named members, members who join or leave midway and threads must each still get
exactly their own counts and /notifications."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser
from tests.integration.test_notifications import counts, unread

Client = TestClient[Any, Any]
THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def crowd(
    homeserver_client: Callable[..., Any], size: int, **config: Any
) -> tuple[RoomUser, list[RoomUser], str]:
    """alice's public room, and `size` members joined to it."""
    client: Client = await homeserver_client(**{"rate_limits.enabled": False, **config})
    alice = await RoomUser.make(client, "alice")
    members = [await RoomUser.make(client, f"member{i}") for i in range(size)]
    room_id = await alice.create_room(preset="public_chat")
    for member in members:
        await member.join(room_id)
    return alice, members, room_id


async def thread_reply(sender: RoomUser, room_id: str, root: str, text: str) -> str:
    """Send a reply in the thread of `root`."""
    content = {
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    return await sender.send(room_id, content)


async def notified_bodies(user: RoomUser) -> list[str]:
    status, body = await user.get("/v3/notifications")
    assert status == 200, body
    return [n["event"]["content"].get("body", "") for n in body["notifications"]]


async def test_members_with_own_rules_and_names_in_a_crowd(
    homeserver_client: Callable[..., Any],
) -> None:
    alice, members, room_id = await crowd(homeserver_client, 8)
    muted, fan, named = members[0], members[1], members[2]
    await muted.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await fan.ok(
        "PUT",
        f"/pushrules/global/sender/{alice.user_id}",
        {"actions": ["notify", {"set_tweak": "highlight"}]},
    )
    await alice.say(room_id, "hello all")
    await alice.say(room_id, "a word for member2 only")
    await members[3].say(room_id, "from a member")
    assert unread(await counts(muted, room_id)) == (0, 0)
    assert unread(await counts(fan, room_id)) == (3, 2)
    assert unread(await counts(named, room_id)) == (3, 1)
    assert unread(await counts(members[3], room_id)) == (2, 0)  # not their own message
    for plain in members[4:]:
        assert unread(await counts(plain, room_id)) == (3, 0)
    assert unread(await counts(alice, room_id)) == (1, 0)
    assert await notified_bodies(members[5]) == [
        "from a member",
        "a word for member2 only",
        "hello all",
    ]
    assert await notified_bodies(muted) == []
    # Rules changed midway apply from then on, and only to their owner.
    await muted.ok("DELETE", f"/pushrules/global/room/{room_id}")
    await members[4].ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await alice.say(room_id, "after the changes")
    assert unread(await counts(muted, room_id)) == (1, 0)
    assert unread(await counts(members[4], room_id)) == (3, 0)
    assert unread(await counts(members[5], room_id)) == (4, 0)


async def test_members_joining_and_leaving_midway(homeserver_client: Callable[..., Any]) -> None:
    alice, members, room_id = await crowd(homeserver_client, 4)
    late = await RoomUser.make(alice.client, "late")
    await alice.say(room_id, "before the join")
    await late.join(room_id)
    await alice.say(room_id, "after the join")
    assert unread(await counts(late, room_id)) == (1, 0)
    assert unread(await counts(members[0], room_id)) == (2, 0)
    await members[1].leave(room_id)
    await alice.say(room_id, "after the leave")
    assert "after the leave" not in await notified_bodies(members[1])
    await members[1].join(room_id)
    await alice.say(room_id, "after the return")
    assert unread(await counts(members[1], room_id)) == (1, 0)
    assert unread(await counts(late, room_id)) == (3, 0)
    assert unread(await counts(members[0], room_id)) == (4, 0)


async def test_thread_receipts_in_a_crowd(homeserver_client: Callable[..., Any]) -> None:
    alice, members, room_id = await crowd(homeserver_client, 5)
    root = await alice.say(room_id, "root")

    first = await thread_reply(alice, room_id, root, "one")
    await thread_reply(alice, room_id, root, "two for member0")
    await alice.say(room_id, "main again")
    reader = members[0]
    room = await counts(reader, room_id, filter=THREADED)
    assert unread(room) == (2, 0)
    assert room["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 1}
    }
    # A receipt in the thread reads only the thread, up to its event.
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}", {"thread_id": root})
    room = await counts(reader, room_id, filter=THREADED)
    assert unread(room) == (2, 0)
    assert room["unread_thread_notifications"] == {
        root: {"notification_count": 1, "highlight_count": 1}
    }
    # The others' counts are untouched, thread and main timeline together without
    # the filter.
    for other in members[1:]:
        assert unread(await counts(other, room_id)) == (4, 0)
    await thread_reply(alice, room_id, root, "three")
    room = await counts(reader, room_id, filter=THREADED)
    assert room["unread_thread_notifications"][root]["notification_count"] == 2
    assert unread(await counts(members[1], room_id)) == (5, 0)
