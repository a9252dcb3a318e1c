"""Simplified sliding sync (MSC4186): the endpoint, positions and long-polls, lists
and their windows moving as rooms are bumped, rooms leaving and re-entering a window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import CLIENT_V3, login_user, register_user
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


async def test_versions_advertise_simplified_sliding_sync(client: Client) -> None:
    resp = await client.get("/_matrix/client/versions")
    body = await resp.json()
    assert body["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_first_answer_sorts_rooms_by_recency_and_sends_them_whole(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    named = await alice.create_room(name="Named room")
    dm = await alice.create_room(invite=[bob.user_id], is_direct=True)
    await bob.join(dm)
    await bob.send(dm, "hello alice")
    await alice.send(named, "newest")
    answer = await alice.ss(one_list(limit=2))
    assert answer["lists"]["all"]["count"] == 2
    assert window(answer) == [named, dm]
    room = answer["rooms"][named]
    assert room["initial"] is True
    assert room["name"] == "Named room"
    assert bodies(room) == ["newest"]
    assert room["joined_count"] == 1 and room["invited_count"] == 0
    assert isinstance(room["bump_stamp"], int) and isinstance(room["prev_batch"], str)
    assert room["notification_count"] == 0
    types = {(e["type"], e["state_key"]) for e in room["required_state"]}
    assert ("m.room.name", "") in types and ("m.room.member", alice.user_id) in types
    assert ("m.room.create", "") not in types
    other = answer["rooms"][dm]
    assert "name" not in other
    assert [h["user_id"] for h in other["heroes"]] == [bob.user_id]
    assert answer["rooms"][named]["bump_stamp"] > other["bump_stamp"]
    assert "pos" in answer


async def test_windows_move_as_messages_bump_rooms(client: Client) -> None:
    alice = await new_user(client, "alice")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(3)]
    body = one_list(end=1, limit=3)
    first = await alice.ss(body)
    assert window(first) == [rooms[2], rooms[1]]
    assert first["lists"]["all"]["count"] == 3
    # Nothing new: the answer repeats no room.
    quiet = await alice.next(body)
    assert quiet["rooms"] == {}
    # The oldest room is bumped into the window; it is new to the connection.
    await alice.send(rooms[0], "up")
    moved = await alice.next(body)
    assert window(moved) == [rooms[0], rooms[2]]
    assert set(moved["rooms"]) == {rooms[0]}
    assert moved["rooms"][rooms[0]]["initial"] is True
    assert bodies(moved["rooms"][rooms[0]]) == ["up"]
    # rooms[1] left the window; while out of it, it gets messages, then it re-enters:
    # not initial, with the messages missed (limited beyond the timeline limit).
    for i in range(4):
        await alice.send(rooms[1], f"m{i}")
    back = await alice.next(body)
    assert window(back) == [rooms[1], rooms[0]]
    room = back["rooms"][rooms[1]]
    assert "initial" not in room
    assert bodies(room) == ["m1", "m2", "m3"]
    assert room["limited"] is True
    assert room["num_live"] == 3


async def test_incremental_sends_only_new_events(client: Client) -> None:
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="one")
    body = one_list(limit=5)
    await alice.ss(body)
    await alice.send(room_id, "a")
    await alice.state(room_id, "m.room.name", {"name": "renamed"})
    answer = await alice.next(body)
    room = answer["rooms"][room_id]
    assert bodies(room) == ["a"]
    assert room["limited"] is False
    assert room["num_live"] == 2
    assert room["name"] == "renamed"
    assert [e["type"] for e in room["required_state"]] == ["m.room.name"]


async def test_long_poll_is_woken_by_a_message(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    body = one_list(limit=1)
    await alice.ss(body)
    waiting = asyncio.create_task(alice.next(body, timeout_ms=20_000))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await bob.send(room_id, "wake up")
    answer = await asyncio.wait_for(waiting, 10)
    assert bodies(answer["rooms"][room_id]) == ["wake up"]
    # A long-poll with nothing to say answers empty at its timeout.
    empty = await alice.next(body, timeout_ms=200)
    assert empty["rooms"] == {}


async def test_woken_answers_carry_the_unread_counts_of_the_rooms_sent(client: Client) -> None:
    """The counts of a room sent in a woken answer are those after the user's read
    receipt, in a room of the last window as in one that has just entered it."""
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    quiet = await alice.create_room(preset="public_chat")
    room_id = await alice.create_room(preset="public_chat")
    for joined in (quiet, room_id):
        await bob.join(joined)
    body = one_list(end=0, limit=1)
    await alice.ss(body)
    counts = []
    for text in ("one", "two", "alice: three"):
        waiting = asyncio.create_task(alice.next(body, timeout_ms=20_000))
        await asyncio.sleep(0.2)
        last = await bob.send(room_id, text)
        room = (await asyncio.wait_for(waiting, 10))["rooms"][room_id]
        counts.append((room["notification_count"], room["highlight_count"]))
    assert counts == [(1, 0), (2, 0), (3, 1)]
    # Read up to the last: only what comes after counts (the room's summary recounted).
    await alice.call("POST", f"/rooms/{room_id}/receipt/m.read/{last}", {})
    await bob.send(room_id, "four")
    room = (await alice.next(body))["rooms"][room_id]
    assert (room["notification_count"], room["highlight_count"]) == (1, 0)
    # A room entering the window is counted too.
    await bob.send(quiet, "elsewhere")
    room = (await alice.next(body))["rooms"][quiet]
    assert room["initial"] is True and room["notification_count"] == 1


async def test_a_long_poll_asking_more_than_its_pos_answers_at_once(client: Client) -> None:
    """Nothing moved since `pos`, but a client that widens its window or asks for more
    state gets it at once, not at the timeout; the same request again waits."""
    alice = await new_user(client, "alice")
    older = await alice.create_room(name="older", topic="about")
    newer = await alice.create_room(name="newer")
    first = await alice.ss(one_list(end=0, state=[["m.room.name", ""]]))
    assert window(first) == [newer]
    wider = one_list(end=1, state=[["m.room.name", ""]])
    answer = await asyncio.wait_for(alice.next(wider, timeout_ms=20_000), 10)
    assert window(answer) == [newer, older]
    assert answer["rooms"][older]["initial"] is True
    more = one_list(end=1, state=[["m.room.name", ""], ["m.room.topic", ""]])
    answer = await asyncio.wait_for(alice.next(more, timeout_ms=20_000), 10)
    assert {e["type"] for e in answer["rooms"][older]["required_state"]} == {
        "m.room.name",
        "m.room.topic",
    }
    waiting = asyncio.create_task(alice.next(more, timeout_ms=20_000))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await alice.send(older, "now")
    answer = await asyncio.wait_for(waiting, 10)
    assert bodies(answer["rooms"][older]) == ["now"]


async def test_unknown_pos_answers_m_unknown_pos(client: Client) -> None:
    alice = await new_user(client, "alice")
    body = one_list()
    first = await alice.ss(body)
    for pos in ("999999999", "garbage"):
        resp = await alice.ss(body, pos=pos, status=400)
        assert resp["errcode"] == "M_UNKNOWN_POS"
    # A position belongs to its connection.
    other = await alice.ss({**body, "conn_id": "other"}, pos=first["pos"], status=400)
    assert other["errcode"] == "M_UNKNOWN_POS"
    # The position just used stays valid (the answer may have been lost), the one
    # before it does not.
    second = await alice.ss(body, pos=first["pos"])
    again = await alice.ss(body, pos=first["pos"])
    assert again["pos"] != second["pos"]
    third = await alice.ss(body, pos=again["pos"])
    stale = await alice.ss(body, pos=first["pos"], status=400)
    assert stale["errcode"] == "M_UNKNOWN_POS"
    assert third["pos"]


async def test_a_long_poll_answering_late_keeps_the_clients_newer_position(
    client: Client,
) -> None:
    """A client that gave up a long-poll (the server still holds it) and went on from
    the same position must not find its newer position unknown once the abandoned
    one answers."""
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="room")
    body = one_list()
    first = (await alice.ss(body))["pos"]
    abandoned = asyncio.create_task(alice.ss(body, pos=first, timeout_ms=20_000))
    await asyncio.sleep(0.3)
    second = (await alice.ss(body, pos=first))["pos"]
    third = (await alice.ss(body, pos=second))["pos"]
    await alice.send(room_id, "wakes the abandoned one")
    await asyncio.wait_for(abandoned, 10)
    answer = await alice.ss(body, pos=third)
    assert bodies(answer["rooms"][room_id]) == ["wakes the abandoned one"]


async def test_bad_bodies_are_refused(client: Client) -> None:
    alice = await new_user(client, "alice")
    for body in (
        {"lists": {"a": {"ranges": [[5, 1]]}}},
        {"lists": {"a": {"ranges": "all"}}},
        {"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": -1}}},
        {"lists": {"a": {"required_state": [["m.room.name"]]}}},
        {"room_subscriptions": []},
    ):
        resp = await alice.ss(body, status=400)
        assert resp["errcode"] == "M_INVALID_PARAM"


async def test_room_subscription_adds_to_the_lists(client: Client) -> None:
    alice = await new_user(client, "alice")
    old = await alice.create_room(name="old")
    await alice.create_room(name="new")
    body = {
        **one_list(end=0, limit=1),
        "room_subscriptions": {
            old: {"timeline_limit": 10, "required_state": [["m.room.create", ""]]},
            "!unknown:test.local": {"timeline_limit": 1},
        },
    }
    answer = await alice.ss(body)
    assert set(answer["rooms"]) == {old, window(answer)[0]}
    types = [e["type"] for e in answer["rooms"][old]["required_state"]]
    assert types == ["m.room.create"]
    assert len(answer["rooms"][old]["timeline"]) > 1


async def test_only_bumping_events_reorder_the_list(client: Client) -> None:
    alice = await new_user(client, "alice")
    older = await alice.create_room(name="older")
    newer = await alice.create_room(name="newer")
    body = one_list(limit=1)
    first = await alice.ss(body)
    assert window(first) == [newer, older]
    stamp = first["rooms"][older]["bump_stamp"]
    # A topic change is news for the room but does not move it up the list.
    await alice.state(older, "m.room.topic", {"topic": "quiet"})
    answer = await alice.next(body)
    assert window(answer) == [newer, older]
    assert answer["rooms"][older]["bump_stamp"] == stamp
    assert answer["rooms"][older]["timeline"][-1]["type"] == "m.room.topic"
    await alice.send(older, "loud")
    answer = await alice.next(body)
    assert window(answer) == [older, newer]
    assert answer["rooms"][older]["bump_stamp"] > stamp


async def test_asking_for_more_state_resends_it(client: Client) -> None:
    alice = await new_user(client, "alice")
    room_id = await alice.create_room(name="room", topic="about")
    await alice.ss(one_list(limit=1, state=[["m.room.name", ""]]))
    wider = one_list(limit=1, state=[["m.room.name", ""], ["m.room.topic", ""]])
    answer = await alice.next(wider)
    room = answer["rooms"][room_id]
    assert "initial" not in room and "timeline" not in room
    assert {e["type"] for e in room["required_state"]} == {"m.room.name", "m.room.topic"}
    assert (await alice.next(wider))["rooms"] == {}


async def test_a_deleted_devices_connections_go_with_it(open_client: Client) -> None:
    registered = await register_user(open_client, "alice", "pw")
    main = User(open_client, registered["user_id"], registered["access_token"])
    phone_login = await login_user(open_client, "alice", "pw", device_id="PHONE")
    phone = User(open_client, registered["user_id"], phone_login["access_token"])
    await phone.ss(one_list())
    await main.ss(one_list())
    hs = open_client.app[HOMESERVER]

    async def connections() -> list[str]:
        async with hs.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT device_id FROM sliding_sync_connections WHERE user_id = %s ORDER BY 1",
                (main.user_id,),
            )
            return [row[0] for row in await cur.fetchall()]

    assert await connections() == sorted([registered["device_id"], "PHONE"])
    url = f"{CLIENT_V3}/devices/PHONE"
    resp = await open_client.delete(url, headers=main.headers)
    session = (await resp.json())["session"]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
        "session": session,
    }
    resp = await open_client.delete(url, json={"auth": auth}, headers=main.headers)
    assert resp.status == 200, await resp.text()
    assert await connections() == [registered["device_id"]]
