"""Sliding sync lists brought up to date from the connection's window: a long-poll that
repeats its request reads only the rooms with events since its position, as long as
the user's memberships are as they were; every answer must equal the list read whole
(what a new connection is answered at the same moment)."""

from __future__ import annotations

import asyncio
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
        pos = self.user.pos
        fresh = await self.user.ss({**self.body, "conn_id": "fresh"}, pos=None)
        self.user.pos = pos
        assert window(answer) == window(fresh)
        assert answer["lists"]["all"]["count"] == fresh["lists"]["all"]["count"]
        return window(answer)


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
