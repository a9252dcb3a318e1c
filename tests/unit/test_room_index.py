"""The notifier's room index: a user's rooms stay indexed a while after their last
long-poll, so that the next one registers without touching every room again."""

from __future__ import annotations

import asyncio

import pytest

from homeserver.services.core import room_index
from homeserver.services.core.room_index import RoomIndex

ROOMS = frozenset(f"!r{i}:x" for i in range(1000))


def users(index: RoomIndex, room_id: str) -> list[str]:
    return sorted(index.users_in(room_id))


async def test_a_returning_long_poll_registers_the_same_set_and_finds_its_rooms() -> None:
    index = RoomIndex()
    held = index.hold("@a:x", ROOMS)
    index.release("@a:x", held)
    # Still indexed once the waiter has gone; an equal set is the one kept.
    assert users(index, "!r5:x") == ["@a:x"]
    again = index.hold("@a:x", frozenset(ROOMS))
    assert again is held
    assert index.shared("@a:x", frozenset(ROOMS)) is held
    index.release("@a:x", again)
    index.close()
    assert users(index, "!r5:x") == []


async def test_a_new_set_replaces_the_users_idle_one_but_not_one_still_waited_on() -> None:
    index = RoomIndex()
    old = index.hold("@a:x", frozenset({"!old:x", "!both:x"}))
    index.release("@a:x", old)
    new = index.hold("@a:x", frozenset({"!new:x", "!both:x"}))
    # The membership moved: the idle set goes at once, and its rooms with it.
    assert users(index, "!old:x") == []
    assert users(index, "!new:x") == ["@a:x"]
    assert users(index, "!both:x") == ["@a:x"]
    # Two long-polls of one user on different sets: both stay while held.
    other = index.hold("@a:x", frozenset({"!other:x"}))
    assert users(index, "!new:x") == ["@a:x"] and users(index, "!other:x") == ["@a:x"]
    index.release("@a:x", other)
    index.release("@a:x", new)
    index.hold("@b:x", frozenset({"!both:x"}))
    assert users(index, "!both:x") == ["@a:x", "@b:x"]
    index.close()


async def test_idle_rooms_go_after_the_linger_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(room_index, "LINGER_S", 0.01)
    index = RoomIndex()
    first = index.hold("@a:x", ROOMS)
    second = index.hold("@a:x", ROOMS)
    index.release("@a:x", first)
    await asyncio.sleep(0.05)
    # One waiter still holds the set.
    assert users(index, "!r1:x") == ["@a:x"]
    index.release("@a:x", second)
    await asyncio.sleep(0.05)
    assert users(index, "!r1:x") == [] and index.users == 0
    # Taken again before the time is up, it stays.
    held = index.hold("@a:x", ROOMS)
    index.release("@a:x", held)
    index.hold("@a:x", ROOMS)
    await asyncio.sleep(0.05)
    assert users(index, "!r1:x") == ["@a:x"]
    index.close()
