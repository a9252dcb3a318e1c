"""/sync as clients built against Synapse rely on it: lazy members of named rooms,
newly joined rooms, `timeline.limit: 0`, forgotten rooms' leaves, ignored inviters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_sync import Client, bodies, new_user, state_keys


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def test_lazy_members_of_a_named_room_are_the_senders(client: Client) -> None:
    """In a room with a name, an initial lazy-loading sync sends the member events of
    the timeline's senders and of the user, not the heroes' (which only name rooms
    without a name): in a small room that would be every member."""
    users = [await new_user(client, name) for name in ("alice", "bob", "carol", "dave")]
    alice, bob, _, dave = users
    for name in (None, "Named"):
        room_id = await alice.create_room(preset="public_chat", **({"name": name} if name else {}))
        for user in users[1:]:
            await user.join(room_id)
        for i in range(4):
            await alice.send(room_id, f"filler {i}")
        await bob.send(room_id, "from bob")
        lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}}
        room = (await dave.sync(filter=lazy))["rooms"]["join"][room_id]
        senders = {e["sender"] for e in room["timeline"]["events"]}
        assert senders == {alice.user_id, bob.user_id}
        heroes = set(room["summary"]["m.heroes"])
        if name is None:
            # Without a name the client names the room after its heroes.
            assert state_keys(room) == senders | heroes | {dave.user_id}
        else:
            assert state_keys(room) == senders | {dave.user_id}


async def test_newly_joined_room_is_limited(client: Client) -> None:
    """A room joined since the token is `limited` in the incremental sync: the room's
    history goes back past the timeline, which the client has never seen (even when
    the filter leaves fewer events than the limit)."""
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    for i in range(4):
        await alice.send(room_id, f"before the token {i}")
    only_messages = {
        "room": {"timeline": {"limit": 10, "types": ["m.room.message"]}, "state": {"types": []}}
    }
    token = (await bob.sync(filter=only_messages))["next_batch"]
    for i in range(4):
        await alice.send(room_id, f"after the token {i}")
    await bob.join(room_id)
    room = (await bob.sync(since=token, filter=only_messages))["rooms"]["join"][room_id]
    assert len(bodies(room)) == 8
    assert room["timeline"]["limited"] is True
    # Later syncs of the room are limited only by their own gap.
    await alice.send(room_id, "one more")
    later = await bob.sync(since=token, filter=only_messages)
    token = later["next_batch"]
    await alice.send(room_id, "and another")
    room = (await bob.sync(since=token, filter=only_messages))["rooms"]["join"][room_id]
    assert bodies(room) == ["and another"] and room["timeline"]["limited"] is False


async def test_timeline_limit_zero(client: Client) -> None:
    """`timeline.limit: 0` is a valid filter (clients use it to list rooms and their
    state without any messages): empty timelines, limited when events were left out."""
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="Quiet")
    await alice.send(room_id, "hidden by the limit")
    no_timeline = {"room": {"timeline": {"limit": 0}}}
    stored = await alice.call("POST", f"/user/{alice.user_id}/filter", no_timeline)
    for flt in (no_timeline, stored["filter_id"]):
        body = await alice.sync(filter=flt)
        room = body["rooms"]["join"][room_id]
        assert room["timeline"]["events"] == []
        assert room["timeline"]["limited"] is True
        assert {"m.room.create", "m.room.name", "m.room.member"} <= {
            e["type"] for e in room["state"]["events"]
        }
    # The prev_batch of an empty timeline pages back from the end of the room.
    page = await alice.call(
        "GET", f"/rooms/{room_id}/messages?dir=b&limit=1&from={room['timeline']['prev_batch']}"
    )
    assert [e["content"].get("body") for e in page["chunk"]] == ["hidden by the limit"]
    await alice.send(room_id, "later")
    later = await alice.sync(since=body["next_batch"], filter=no_timeline)
    room = later["rooms"]["join"][room_id]
    assert room["timeline"]["events"] == [] and room["timeline"]["limited"] is True


async def test_leave_of_a_forgotten_room_reaches_the_next_sync(client: Client) -> None:
    """Forgetting a room just after leaving it does not swallow the leave: a sync from
    before it (another device, say) still sees the room in `leave`, once."""
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    token = (await bob.sync())["next_batch"]
    await alice.send(room_id, "before you go")
    await bob.call("POST", f"/rooms/{room_id}/leave", {})
    await bob.call("POST", f"/rooms/{room_id}/forget", {})
    await alice.send(room_id, "after you forgot")
    result = await bob.sync(since=token)
    left = result["rooms"]["leave"][room_id]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"
    assert bodies(left) == ["before you go"]
    assert room_id not in result["rooms"].get("join", {})
    later = await bob.sync(since=result["next_batch"], timeout=0)
    assert room_id not in later.get("rooms", {}).get("leave", {})
    # A forgotten room is in no initial sync, even when left rooms are asked for.
    initial = await bob.sync(filter={"room": {"include_leave": True}})
    assert room_id not in initial["rooms"].get("leave", {})


async def test_invites_from_ignored_users_are_hidden(client: Client) -> None:
    """An invitation from a user in m.ignored_user_list reaches no sync, initial or
    incremental; others' invitations still do."""
    bob = await new_user(client, "bob")
    mallory = await new_user(client, "mallory")
    carol = await new_user(client, "carol")
    await bob.call(
        "PUT",
        f"/user/{bob.user_id}/account_data/m.ignored_user_list",
        {"ignored_users": {mallory.user_id: {}}},
    )
    token = (await bob.sync())["next_batch"]
    spam = await mallory.create_room(preset="private_chat")
    await mallory.call("POST", f"/rooms/{spam}/invite", {"user_id": bob.user_id})
    wanted = await carol.create_room(preset="private_chat")
    await carol.call("POST", f"/rooms/{wanted}/invite", {"user_id": bob.user_id})
    for body in (await bob.sync(since=token), await bob.sync()):
        invites = body["rooms"].get("invite", {})
        assert wanted in invites
        assert spam not in invites
