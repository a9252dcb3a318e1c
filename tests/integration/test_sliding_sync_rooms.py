"""Simplified sliding sync: list filters, lazy-loaded members, invites, leaves, and
connections that outlive a restart and are shared by two servers on one database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import device_token, make_user
from tests.integration.sliding_sync_helpers import (
    Client,
    User,
    bodies,
    new_user,
    one_list,
    window,
)


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def test_filters_pick_the_rooms_of_a_list(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    plain = await alice.create_room(name="plain")
    secret = await alice.create_room(
        name="secret",
        initial_state=[
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    space = await alice.create_room(name="space", creation_content={"type": "m.space"})
    await alice.state(space, "m.space.child", {"via": ["test.local"]}, key=plain)
    dm = await alice.create_room(invite=[bob.user_id], is_direct=True)
    await alice.call("PUT", f"/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [dm]})
    await alice.call("PUT", f"/user/{alice.user_id}/rooms/{secret}/tags/m.favourite", {})
    invited = await bob.create_room(name="for alice", invite=[alice.user_id])

    async def rooms_of(**filters: Any) -> set[str]:
        answer = await alice.ss(one_list(**filters))
        ids = window(answer)
        assert answer["lists"]["all"]["count"] == len(ids)
        return set(ids)

    assert await rooms_of() == {plain, secret, space, dm, invited}
    assert await rooms_of(is_encrypted=True) == {secret}
    assert await rooms_of(is_encrypted=False) == {plain, space, dm, invited}
    assert await rooms_of(is_dm=True) == {dm}
    assert await rooms_of(is_dm=False, is_invite=False) == {plain, secret, space}
    assert await rooms_of(is_invite=True) == {invited}
    assert await rooms_of(room_types=["m.space"]) == {space}
    # None stands for rooms without a type.
    assert await rooms_of(room_types=[None]) == {plain, secret, dm, invited}
    assert await rooms_of(room_types=["m.space", None]) == {plain, secret, space, dm, invited}
    assert await rooms_of(not_room_types=[None]) == {space}
    assert await rooms_of(not_room_types=["m.space"], is_invite=False) == {plain, secret, dm}
    assert await rooms_of(spaces=[space]) == {plain}
    assert await rooms_of(tags=["m.favourite"]) == {secret}
    assert await rooms_of(not_tags=["m.favourite"], is_invite=False) == {plain, space, dm}
    answer = await alice.ss(one_list())
    assert answer["rooms"][dm]["is_dm"] is True
    assert "is_dm" not in answer["rooms"][plain]


async def test_lazy_members_are_the_timeline_senders_sent_once(client: Client) -> None:
    alice = await new_user(client, "alice")
    users = [await new_user(client, name) for name in ("bob", "carol", "dan")]
    room_id = await alice.create_room(preset="public_chat")
    for user in users:
        await user.join(room_id)
    await users[0].send(room_id, "from bob")
    await users[1].send(room_id, "from carol")
    lazy = [["m.room.member", "$LAZY"]]
    body = one_list(limit=2, state=lazy)
    first = await alice.ss(body)
    members = {e["state_key"] for e in first["rooms"][room_id]["required_state"]}
    assert members == {users[0].user_id, users[1].user_id}
    await users[0].send(room_id, "bob again")
    await users[2].send(room_id, "from dan")
    second = await alice.next(body)
    members = {e["state_key"] for e in second["rooms"][room_id]["required_state"]}
    # bob's member event was sent already: only dan's is new.
    assert members == {users[2].user_id}
    # $ME and explicit members come whatever the timeline.
    me = await alice.ss(one_list(limit=1, state=[["m.room.member", "$ME"]]))
    assert [e["state_key"] for e in me["rooms"][room_id]["required_state"]] == [alice.user_id]
    everything = await alice.ss(one_list(limit=1, state=[["*", "*"]]))
    types = {e["type"] for e in everything["rooms"][room_id]["required_state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules"} <= types
    members_only = await alice.ss(one_list(limit=1, state=[["m.room.member", "*"]]))
    keys = {e["state_key"] for e in members_only["rooms"][room_id]["required_state"]}
    assert keys == {alice.user_id} | {u.user_id for u in users}


async def test_invites_leaves_and_kicks(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await bob.create_room(name="bob's room", invite=[alice.user_id])
    body = one_list(limit=5)
    first = await alice.ss(body)
    invite = first["rooms"][room_id]
    assert invite["initial"] is True
    assert "timeline" not in invite
    state = {(e["type"], e["state_key"]) for e in invite["invite_state"]}
    assert ("m.room.name", "") in state and ("m.room.member", alice.user_id) in state
    # Joining: the room is sent whole, from nothing.
    await alice.join(room_id)
    joined = await alice.next(body)
    assert joined["rooms"][room_id]["initial"] is True
    assert joined["rooms"][room_id]["name"] == "bob's room"
    # Leaving: the room comes once more, up to the leave, and then drops out of the list.
    await bob.send(room_id, "bye")
    await alice.call("POST", f"/rooms/{room_id}/leave", {})
    left = await alice.next(body)
    timeline = left["rooms"][room_id]["timeline"]
    assert timeline[-1]["type"] == "m.room.member"
    assert timeline[-1]["content"]["membership"] == "leave"
    assert "initial" not in left["rooms"][room_id]
    await bob.send(room_id, "not for alice")
    after = await alice.next(body)
    assert after["rooms"] == {}
    fresh = await alice.ss(body, pos=None)
    assert room_id not in fresh["rooms"] and fresh["lists"]["all"]["count"] == 0
    # A kick stays in the list (Synapse shows rooms the user did not leave themselves).
    other = await bob.create_room(preset="public_chat")
    await alice.join(other)
    await bob.send(other, "before the kick")
    await bob.call("POST", f"/rooms/{other}/kick", {"user_id": alice.user_id})
    await bob.send(other, "after the kick")
    kicked = await alice.ss(body, pos=None)
    assert window(kicked) == [other]
    assert "after the kick" not in bodies(kicked["rooms"][other])
    assert kicked["rooms"][other]["timeline"][-1]["content"]["membership"] == "leave"


async def test_invites_from_ignored_users_are_hidden(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    await alice.call(
        "PUT",
        f"/user/{alice.user_id}/account_data/m.ignored_user_list",
        {"ignored_users": {bob.user_id: {}}},
    )
    await bob.create_room(invite=[alice.user_id])
    answer = await alice.ss(one_list())
    assert answer["lists"]["all"]["count"] == 0 and answer["rooms"] == {}


async def test_connection_survives_a_restart_and_moves_between_processes(
    servers: Callable[[str], Any],
) -> None:
    first = await servers("a")
    alice_id, token = await make_user(first, "alice")
    alice = User(first, alice_id, token)
    room_id = await alice.create_room(name="kept")
    body = one_list(limit=3)
    await alice.ss(body)
    await alice.send(room_id, "before restart")
    pos = alice.pos

    restarted = await servers("a")
    alice = User(restarted, alice_id, token)
    answer = await alice.ss(body, pos=pos)
    room = answer["rooms"][room_id]
    assert "initial" not in room and bodies(room) == ["before restart"]

    # A second process on the same database continues the same connection.
    other = await servers("b")
    on_b = User(other, alice_id, token)
    await alice.send(room_id, "via a")
    answer = await on_b.ss(body, pos=answer["pos"])
    assert bodies(answer["rooms"][room_id]) == ["via a"]
    assert "initial" not in answer["rooms"][room_id]


async def second_device(client: Client, user: User, device_id: str) -> User:
    """Another device of `user`, with its own access token."""
    return User(client, user.user_id, await device_token(client, user.user_id, device_id))


def of_type(events: list[Any], event_type: str) -> Any:
    [event] = [e for e in events if e["type"] == event_type]
    return event


async def test_state_redacted_since_and_own_transaction_ids(client: Client) -> None:
    """A state event redacted after a connection was sent it (and the server keeps
    its rendering) comes redacted to the next first answer; the sender's own message
    carries the transaction id to the device that sent it, and to no other."""
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="Redactions")
    topic_id = await alice.state(room_id, "m.room.topic", {"topic": "secret plans"})
    state = [["m.room.topic", ""], ["m.room.name", ""]]
    first = await alice.ss({**one_list(state=state), "conn_id": "before"})
    topic = of_type(first["rooms"][room_id]["required_state"], "m.room.topic")
    assert topic["content"] == {"topic": "secret plans"}

    redaction = await alice.call("PUT", f"/rooms/{room_id}/redact/{topic_id}/r1", {})
    await alice.call(
        "PUT",
        f"/rooms/{room_id}/send/m.room.message/txn-from-here",
        {"msgtype": "m.text", "body": "mine"},
    )
    room = (await alice.ss({**one_list(state=state), "conn_id": "after"}))["rooms"][room_id]
    topic = of_type(room["required_state"], "m.room.topic")
    assert topic["content"] == {}
    assert topic["unsigned"]["redacted_because"]["event_id"] == redaction["event_id"]
    [message] = room["timeline"]
    assert message["unsigned"]["transaction_id"] == "txn-from-here"

    phone = await second_device(client, alice, "PHONE")
    room = (await phone.ss({**one_list(state=state), "conn_id": "phone"}))["rooms"][room_id]
    [message] = room["timeline"]
    assert message["content"]["body"] == "mine"
    assert "transaction_id" not in message["unsigned"]
    assert of_type(room["required_state"], "m.room.topic")["content"] == {}
