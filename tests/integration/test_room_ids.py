"""A v12 room id is its create event's hash, so one user creating two rooms in the same
millisecond through two processes of one server builds two identical create events.
Both creations must still succeed, each with a room of its own (the cluster's room
creation flood hit this as a 500)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.rooms.creation import CreateRoomRequest
from homeserver.storage.core.pool import Database
from tests.integration.conftest import start_process


@pytest.fixture
async def two_processes(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[tuple[Homeserver, Homeserver]]:
    """Two processes of one server on one database (the same signing key)."""
    conninfo = database_factory()
    running: list[tuple[Homeserver, Database]] = []
    for _ in range(2):
        running.append(await start_process(tmp_path / "hs", conninfo))
    yield running[0][0], running[1][0]
    for hs, db in running:
        await hs.close()
        await db.close()


async def test_same_millisecond_creations_in_two_processes_get_two_rooms(
    two_processes: tuple[Homeserver, Homeserver],
) -> None:
    first, second = two_processes
    user_id = await first.accounts.register_user("creator", None)
    request = CreateRoomRequest(room_version="12")
    for _ in range(3):
        # Both processes stamp their next create event with the same millisecond.
        moment = now_ms() + 60_000
        first.writer._last_create_ts = moment
        second.writer._last_create_ts = moment
        (one, _), (other, _) = await asyncio.gather(
            first.creation.create(user_id, request), second.creation.create(user_id, request)
        )
        assert one != other
        for hs in (first, second):
            assert set(await hs.membership.joined_rooms(user_id)) >= {one, other}
