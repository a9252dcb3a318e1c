"""What admins read of rooms they are not in, and redacting all of a user's messages
(polled by its id)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


async def test_admin_reads_history_and_redacts_a_user(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    mallory = await RoomUser.make(client, "mallory")
    room_id = await alice.create_room(preset="public_chat")
    await alice.invite(room_id, mallory.user_id)
    await mallory.join(room_id)
    spam = [await mallory.say(room_id, f"spam {n}") for n in range(3)]
    keep = await alice.say(room_id, "keep")

    # The admin is in no room, and reads it all the same.
    status, page = await admin_call(
        client,
        "GET",
        f"{V1}/rooms/{room_id}/messages",
        admin_token,
        params={"dir": "b", "limit": "2"},
    )
    assert status == 200
    assert [e["event_id"] for e in page["chunk"]] == [keep, spam[2]]
    status, more = await admin_call(
        client, "GET", f"{V1}/rooms/{room_id}/messages", admin_token,
        params={"dir": "b", "limit": "1", "from": page["end"]},
    )  # fmt: skip
    assert [e["event_id"] for e in more["chunk"]] == [spam[1]]
    status, context = await admin_call(
        client, "GET", f"{V1}/rooms/{room_id}/context/{spam[1]}", admin_token, params={"limit": "2"}
    )
    assert context["event"]["event_id"] == spam[1]
    assert [e["event_id"] for e in context["events_after"]] == [spam[2]]
    status, fetched = await admin_call(client, "GET", f"{V1}/fetch_event/{keep}", admin_token)
    assert fetched["event"]["content"]["body"] == "keep"
    status, counted = await admin_call(
        client, "GET", f"{V1}/users/{alice.user_id}/sent_invite_count", admin_token,
        params={"from_ts": "0"},
    )  # fmt: skip
    assert counted == {"invite_count": 1}

    status, started = await admin_call(
        client, "POST", f"{V1}/user/{mallory.user_id}/redact", admin_token, {"rooms": []}
    )
    assert status == 200
    for _ in range(100):
        status, state = await admin_call(
            client, "GET", f"{V1}/user/redact_status/{started['redact_id']}", admin_token
        )
        if state["status"] not in ("scheduled", "active"):
            break
        await asyncio.sleep(0.05)
    assert state == {"status": "complete", "failed_redactions": {}}
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="20")
    bodies = {e["event_id"]: e["content"].get("body") for e in page["chunk"]}
    assert all(bodies[event_id] is None for event_id in spam)
    assert bodies[keep] == "keep"


async def test_admin_context_has_the_state_at_the_window_end(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    carol = await RoomUser.make(client, "carol")
    room_id = await alice.create_room(preset="public_chat", name="Talk")
    await bob.join(room_id)
    first = await alice.say(room_id, "first")
    middle = await alice.say(room_id, "middle")
    await alice.say(room_id, "next")
    await bob.say(room_id, "late")
    # Carol joins after the window ends: not in the state at its last event.
    await carol.join(room_id)
    path = f"{V1}/rooms/{room_id}/context/{middle}"

    status, context = await admin_call(client, "GET", path, admin_token, params={"limit": "2"})
    assert status == 200
    assert [e["event_id"] for e in context["events_before"]] == [first]
    assert [e["content"].get("body") for e in context["events_after"]] == ["next"]
    state = {(e["type"], e["state_key"]): e for e in context["state"]}
    assert state[("m.room.create", "")]["sender"] == alice.user_id
    assert state[("m.room.name", "")]["content"] == {"name": "Talk"}
    members = {key for (kind, key) in state if kind == "m.room.member"}
    assert members == {alice.user_id, bob.user_id}

    # Lazy loading keeps the members who sent events of the window (bob sent none);
    # the filter also picks the window's events (not his join) and their fields.
    lazy = {"lazy_load_members": True, "types": ["m.room.message", "m.room.member"]}
    status, context = await admin_call(
        client, "GET", path, admin_token, params={"limit": "2", "filter": json.dumps(lazy)}
    )
    assert status == 200
    members = {e["state_key"] for e in context["state"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id}
    assert {e["type"] for e in context["state"]} == {"m.room.member"}
    only_messages = {"types": ["m.room.message"], "event_fields": ["type", "content.body"]}
    status, context = await admin_call(
        client, "GET", path, admin_token, params={"limit": "4", "filter": json.dumps(only_messages)}
    )
    assert status == 200
    assert context["events_before"] == [{"type": "m.room.message", "content": {"body": "first"}}]
    assert context["events_after"] == [
        {"type": "m.room.message", "content": {"body": body}} for body in ("next", "late")
    ]

    status, body = await admin_call(
        client, "GET", path, admin_token, params={"filter": "{not json"}
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
