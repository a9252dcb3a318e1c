"""Sliding sync lists brought up to date from the connection's window: a long-poll that
repeats its request reads only the rooms with events since its position, as long as
the user's memberships are as they were; and so does a first answer, from the windows
of the user's last first answer of the same lists. Every answer must equal the list
read whole (what a new connection is answered at the same moment, for lists no
earlier answer read)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from homeserver import metrics
from homeserver.storage.sliding_sync import rooms as store
from tests.integration.sliding_sync_helpers import Client, User, new_user, one_list, window


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    metrics.enable()
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


def _reads(how: str) -> float:
    return REGISTRY.get_sample_value("homeserver_sliding_sync_lists_total", {"read": how}) or 0.0


_names = itertools.count()


async def reference(user: User, body: dict[str, Any]) -> tuple[Any, str]:
    """A first answer that reads the list whole, and the list's name in it: the list
    under a name no earlier answer used, so no windows kept for the user apply."""
    name = f"ref{next(_names)}"
    pos = user.pos
    before = _reads("whole")
    fresh = await user.ss({**body, "lists": {name: body["lists"]["all"]}, "conn_id": name})
    assert _reads("whole") - before == 1.0
    user.pos = pos
    return fresh, name


class Watcher:
    """A connection long-polling one list, checked against the list read whole."""

    def __init__(self, user: User, body: dict[str, Any]) -> None:
        self.user = user
        self.body = body

    async def start(self) -> None:
        await self.user.ss(self.body)
        # The first answer read the digest the next ones go by.
        await self.step("updated")

    async def step(self, how: str) -> list[str]:
        """The connection's next answer, read as `how` says ("updated" or "whole"),
        equal to a new connection's."""
        before = {h: _reads(h) for h in ("updated", "whole")}
        answer = await self.user.next(self.body)
        assert {h: _reads(h) - before[h] for h in before} == {
            h: 1.0 if h == how else 0.0 for h in before
        }
        fresh, name = await reference(self.user, self.body)
        assert window(answer) == window(fresh, name)
        assert answer["lists"]["all"]["count"] == fresh["lists"][name]["count"]
        return window(answer)


async def first(user: User, body: dict[str, Any], how: str) -> list[str]:
    """A first answer (a new connection), read as `how` says, equal in its list and
    rooms to one that read the list whole."""
    before = {h: _reads(h) for h in ("updated", "whole")}
    answer = await user.ss({**body, "conn_id": f"first{next(_names)}"})
    assert {h: _reads(h) - before[h] for h in before} == {
        h: 1.0 if h == how else 0.0 for h in before
    }
    fresh, name = await reference(user, body)
    assert window(answer) == window(fresh, name)
    assert answer["lists"]["all"]["count"] == fresh["lists"][name]["count"]
    assert _ageless(answer["rooms"]) == _ageless(fresh["rooms"])
    return window(answer)


def _ageless(value: Any) -> Any:
    """`value` without the events' ages (they differ from one answer to the next)."""
    if isinstance(value, dict):
        return {k: _ageless(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [_ageless(v) for v in value]
    return value


async def test_bumps_are_brought_up_to_date_and_memberships_read_whole(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(5)]
    watcher = Watcher(alice, one_list(end=2))
    await watcher.start()
    # A message into a room below the window brings it to the top.
    await alice.send(rooms[0], "up")
    assert await watcher.step("updated") == [rooms[0], rooms[4], rooms[3]]
    # Into a room of the window: the window reorders.
    await alice.send(rooms[3], "again")
    assert await watcher.step("updated") == [rooms[3], rooms[0], rooms[4]]
    # Nothing new: the same window.
    assert await watcher.step("updated") == [rooms[3], rooms[0], rooms[4]]
    # An invite is a membership of the user: read whole.
    invited = await bob.create_room(name="bob's", invite=[alice.user_id])
    assert (await watcher.step("whole"))[0] == invited
    await alice.send(rooms[1], "after the invite")
    assert (await watcher.step("updated"))[0] == rooms[1]
    await alice.join(invited)
    await watcher.step("whole")
    # A kick keeps the room listed; forgetting it takes it out, though no event says so.
    await bob.send(invited, "bye")
    await bob.call("POST", f"/rooms/{invited}/kick", {"user_id": alice.user_id})
    assert invited in await watcher.step("whole")
    await alice.call("POST", f"/rooms/{invited}/forget", {})
    assert invited not in await watcher.step("whole")
    await alice.send(rooms[2], "last")
    assert (await watcher.step("updated"))[0] == rooms[2]


async def test_a_room_left_stays_listed_once_then_goes(client: Client) -> None:
    alice = await new_user(client, "alice")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(4)]
    body = one_list(end=1)
    watcher = Watcher(alice, body)
    await watcher.start()
    # Left since the connection's position: still counted once more (not what a new
    # connection is answered), then no longer, though nothing happened in the room.
    await alice.call("POST", f"/rooms/{rooms[0]}/leave", {})
    left = await alice.next(body)
    assert window(left) == [rooms[3], rooms[2]]
    assert left["lists"]["all"]["count"] == 4
    assert await watcher.step("whole") == [rooms[3], rooms[2]]
    await alice.send(rooms[1], "up")
    assert await watcher.step("updated") == [rooms[1], rooms[3]]


async def test_forgetting_a_room_below_the_window_counts(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    kicked = await bob.create_room(preset="public_chat")
    await alice.join(kicked)
    await bob.call("POST", f"/rooms/{kicked}/kick", {"user_id": alice.user_id})
    rooms = [await alice.create_room(name=f"r{i}") for i in range(2)]
    watcher = Watcher(alice, one_list(end=0))
    await watcher.start()
    await alice.call("POST", f"/rooms/{kicked}/forget", {})
    assert await watcher.step("whole") == [rooms[1]]


async def test_many_events_since_read_the_list_whole(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHANGED_CAP", 3)
    alice = await new_user(client, "alice")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(5)]
    watcher = Watcher(alice, one_list(end=1))
    await watcher.start()
    await alice.send(rooms[0], "one")
    await alice.send(rooms[1], "two")
    assert await watcher.step("updated") == [rooms[1], rooms[0]]
    for i, room_id in enumerate(rooms[2:]):
        await alice.send(room_id, f"more {i}")
    assert await watcher.step("whole") == [rooms[4], rooms[3]]


async def test_dm_filters_follow_the_account_data(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    rooms = [await alice.create_room(name=f"r{i}", invite=[bob.user_id]) for i in range(3)]
    direct = f"/user/{alice.user_id}/account_data/m.direct"
    await alice.call("PUT", direct, {bob.user_id: rooms[:1]})
    watcher = Watcher(alice, one_list(end=4, is_dm=True))
    await watcher.start()
    await alice.call("PUT", direct, {bob.user_id: rooms[:2]})
    assert await watcher.step("whole") == [rooms[1], rooms[0]]
    await alice.send(rooms[0], "up")
    await alice.send(rooms[2], "not a DM")
    assert await watcher.step("updated") == [rooms[0], rooms[1]]


async def test_other_ranges_read_the_list_whole(client: Client) -> None:
    alice = await new_user(client, "alice")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(4)]
    watcher = Watcher(alice, one_list(end=1))
    await watcher.start()
    # Another range: what the connection had does not cover it.
    watcher.body = one_list(end=2)
    assert await watcher.step("whole") == [rooms[3], rooms[2], rooms[1]]
    assert await watcher.step("updated") == [rooms[3], rooms[2], rooms[1]]
    # A room subscription or an extension more changes nothing of the list.
    watcher.body = {
        **one_list(end=2),
        "room_subscriptions": {rooms[0]: {"timeline_limit": 1, "required_state": []}},
        "extensions": {"to_device": {"enabled": True}},
    }
    await alice.send(rooms[0], "up")
    assert await watcher.step("updated") == [rooms[0], rooms[3], rooms[2]]


async def test_a_long_poll_wakes_for_a_room_joined_since_it_last_waited(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    await alice.create_room(name="mine")
    body = one_list(end=4)
    await alice.ss(body)
    # Waits once: the rooms to wait on are read, and kept with the memberships' digest.
    await alice.next(body, timeout_ms=50)
    room_id = await bob.create_room(preset="public_chat")
    await alice.join(room_id)
    assert room_id in window(await alice.next(body))
    poll = asyncio.create_task(alice.next(body, timeout_ms=20_000))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await bob.send(room_id, "hello")
    answer = await asyncio.wait_for(poll, 5)
    assert [e["content"]["body"] for e in answer["rooms"][room_id]["timeline"]] == ["hello"]


async def test_first_answers_start_from_the_users_last_first_answer(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    rooms = [await alice.create_room(name=f"r{i}") for i in range(5)]
    body = one_list(end=2)
    assert await first(alice, body, "whole") == [rooms[4], rooms[3], rooms[2]]
    # Nothing new: the same window, and its rooms' timelines read with the list.
    assert await first(alice, body, "updated") == [rooms[4], rooms[3], rooms[2]]
    # A message below the window brings its room in; its new timeline is sent.
    await alice.send(rooms[0], "up")
    assert await first(alice, body, "updated") == [rooms[0], rooms[4], rooms[3]]
    # An invite, a join, a leave: memberships of the user, read whole.
    invited = await bob.create_room(name="bob's", invite=[alice.user_id])
    assert (await first(alice, body, "whole"))[0] == invited
    await bob.send(invited, "hi")
    assert (await first(alice, body, "updated"))[0] == invited
    await alice.join(invited)
    await first(alice, body, "whole")
    await alice.call("POST", f"/rooms/{rooms[0]}/leave", {})
    assert rooms[0] not in await first(alice, body, "whole")
    await alice.send(rooms[1], "last")
    assert (await first(alice, body, "updated"))[0] == rooms[1]
    # Kicked, the room stays listed; forgotten, it goes, though no event says so.
    await bob.call("POST", f"/rooms/{invited}/kick", {"user_id": alice.user_id})
    assert invited in await first(alice, one_list(end=9), "whole")
    await alice.call("POST", f"/rooms/{invited}/forget", {})
    assert invited not in await first(alice, one_list(end=9), "whole")


async def test_first_answers_of_other_lists_or_after_many_events_read_whole(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    rooms = [await alice.create_room(name=f"r{i}", invite=[bob.user_id]) for i in range(4)]
    direct = f"/user/{alice.user_id}/account_data/m.direct"
    await alice.call("PUT", direct, {bob.user_id: rooms[:1]})
    dms = one_list(end=3, is_dm=True)
    everything = one_list(end=1)
    await first(alice, dms, "whole")
    await first(alice, everything, "whole")
    # Each set of lists has windows of its own.
    assert await first(alice, dms, "updated") == [rooms[0]]
    assert await first(alice, everything, "updated") == [rooms[3], rooms[2]]
    # The DM rooms are what the list was read for: other ones read it whole.
    await alice.call("PUT", direct, {bob.user_id: rooms[:2]})
    assert await first(alice, dms, "whole") == [rooms[1], rooms[0]]
    monkeypatch.setattr(store, "CHANGED_CAP", 2)
    for room_id in rooms[:3]:
        await alice.send(room_id, "more")
    assert await first(alice, everything, "whole") == [rooms[2], rooms[1]]
