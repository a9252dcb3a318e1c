"""Delayed events across `homeserver run` processes on one database: a restart in
between does not lose one, and two processes fire each exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PostgresServer
from tests.integration.test_process import Server, clean_env, free_port
from tests.integration.test_sync_multiprocess import call, register

START_BUDGET = 30.0
DELAY = "org.matrix.msc4140.delay"
FLAGS = ("--open-registration", "--no-rate-limits")


@pytest.fixture
def database_env(postgres: PostgresServer) -> dict[str, str]:
    if not os.environ.get("HOMESERVER_TEST_DATABASE_URL"):
        pytest.skip("needs an external PostgreSQL (HOMESERVER_TEST_DATABASE_URL)")
    return clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())


@pytest.fixture
def servers(tmp_path: Path, database_env: dict[str, str]) -> Iterator[list[Server]]:
    """Started servers, stopped at the end; all share one identity (signing key)."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            assert server.stop() == 0, server.log.read_text()


def start(tmp_path: Path, env: dict[str, str], servers: list[Server], name: str) -> str:
    data_dir = tmp_path / name
    if servers and not data_dir.exists():
        data_dir.mkdir()
        shutil.copy(tmp_path / "a" / "signing.key", data_dir / "signing.key")
    server = Server(data_dir, free_port(), *FLAGS, env=env)
    servers.append(server)
    server.wait_ready(START_BUDGET)
    return f"http://127.0.0.1:{server.port}/_matrix/client/v3"


async def schedule(
    http: aiohttp.ClientSession, api: str, who: dict[str, str], room_id: str, body: str, ms: int
) -> None:
    url = f"{api}/rooms/{room_id}/send/m.room.message/{body}"
    content = {"msgtype": "m.text", "body": body}
    answer = await call(http, "PUT", url, who, content, params={DELAY: str(ms)})
    assert answer["delay_id"]


async def bodies(
    http: aiohttp.ClientSession, api: str, who: dict[str, str], room: str
) -> list[str]:
    page = await call(
        http, "GET", f"{api}/rooms/{room}/messages", who, params={"dir": "b", "limit": "100"}
    )
    return [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]


async def until(check: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.2)


async def test_restart_in_between_does_not_lose_it(
    tmp_path: Path, database_env: dict[str, str], servers: list[Server]
) -> None:
    api = start(tmp_path, database_env, servers, "a")
    async with aiohttp.ClientSession() as http:
        alice = await register(http, api.rsplit("/_matrix", 1)[0], "alice")
        room = (await call(http, "POST", f"{api}/createRoom", alice, {}))["room_id"]
        await schedule(http, api, alice, room, "after-restart", 2000)
        assert servers[0].stop() == 0
        await asyncio.sleep(2.5)  # due while no server runs
        api = start(tmp_path, database_env, servers, "a")
        await until(lambda: _has(http, api, alice, room, "after-restart"))


async def _has(
    http: aiohttp.ClientSession, api: str, who: dict[str, str], room: str, body: str
) -> bool:
    return body in await bodies(http, api, who, room)


async def test_two_processes_fire_each_once(
    tmp_path: Path, database_env: dict[str, str], servers: list[Server]
) -> None:
    a = start(tmp_path, database_env, servers, "a")
    b = start(tmp_path, database_env, servers, "b")
    async with aiohttp.ClientSession() as http:
        alice = await register(http, a.rsplit("/_matrix", 1)[0], "alice")
        room = (await call(http, "POST", f"{a}/createRoom", alice, {}))["room_id"]
        # Scheduled through both processes for about the same moment: both wake for them.
        names = [f"m{n}" for n in range(12)]
        for n, name in enumerate(names):
            await schedule(http, a if n % 2 else b, alice, room, name, 1500)
        await until(lambda: _all(http, a, alice, room, names))
        await asyncio.sleep(1.0)  # a second firing would land by now
        seen = await bodies(http, b, alice, room)
        assert sorted(seen) == sorted(names)


async def _all(
    http: aiohttp.ClientSession, api: str, who: dict[str, str], room: str, names: list[str]
) -> bool:
    return set(names) <= set(await bodies(http, api, who, room))
