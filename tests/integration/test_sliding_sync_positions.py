"""A long-poll's answer goes out while its position is still being stored: a request
that comes with that `pos` meanwhile, to this process or another on the database,
waits until it is stored; one whose storing failed finds it unknown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from homeserver.storage.sliding_sync import connections
from tests.integration.conftest import make_user
from tests.integration.sliding_sync_helpers import User, bodies, one_list

BODY = one_list(end=4, state=[])


def hold_commits(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Positions are stored only once the returned event is set."""
    gate = asyncio.Event()
    commit = connections.commit_position

    async def held(conn: Any, save: Callable[[], Awaitable[Any]] | None = None) -> None:
        await gate.wait()
        await commit(conn, save)

    monkeypatch.setattr(connections, "commit_position", held)
    return gate


async def connected(client: Any) -> tuple[User, str, str]:
    """Alice (and her access token), in a room, with a sliding sync connection (a
    first answer) open."""
    alice_id, token = await make_user(client, "alice")
    alice = User(client, alice_id, token)
    room_id = await alice.create_room(name="room")
    await alice.ss(BODY)
    return alice, token, room_id


async def test_a_position_being_stored_is_waited_for_on_either_process(
    servers: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, token, room_id = await connected(await servers("a"))
    on_b = User(await servers("b"), alice.user_id, token)
    gate = hold_commits(monkeypatch)
    try:
        await alice.send(room_id, "hello")
        # Answered, though its position is not stored yet.
        answer = await asyncio.wait_for(alice.next(BODY), 5)
        assert bodies(answer["rooms"][room_id]) == ["hello"]
        await alice.send(room_id, "again")
        waiting = [
            asyncio.create_task(user.ss(BODY, pos=answer["pos"], timeout_ms=5_000))
            for user in (alice, on_b)
        ]
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in waiting)
    finally:
        gate.set()
    for task in waiting:
        later = await asyncio.wait_for(task, 5)
        room = later["rooms"][room_id]
        assert bodies(room) == ["again"] and "initial" not in room


async def test_a_position_that_could_not_be_stored_is_unknown(
    servers: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _, room_id = await connected(await servers("a"))
    commit = connections.commit_position

    async def failing(conn: Any, save: Callable[[], Awaitable[Any]] | None = None) -> None:
        async def fails() -> None:
            await conn.execute("SELECT 1 / 0")

        await commit(conn, fails)

    monkeypatch.setattr(connections, "commit_position", failing)
    await alice.send(room_id, "hello")
    answer = await alice.next(BODY)
    monkeypatch.undo()
    unknown = await alice.ss(BODY, pos=answer["pos"], status=400)
    assert unknown["errcode"] == "M_UNKNOWN_POS"
    # The client starts again, and goes on from there.
    restarted = await alice.ss(BODY)
    await alice.send(room_id, "after")
    assert bodies((await alice.next(BODY, timeout_ms=5_000))["rooms"][room_id]) == ["after"]
    assert restarted["rooms"][room_id]["initial"] is True
