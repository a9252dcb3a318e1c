"""Two `homeserver run` processes on one database wake each other's long-polls."""

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

START_BUDGET = 30.0


@pytest.fixture
def two_servers(tmp_path: Path, postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    if not os.environ.get("HOMESERVER_TEST_DATABASE_URL"):
        pytest.skip("needs an external PostgreSQL (HOMESERVER_TEST_DATABASE_URL)")
    env = clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())
    flags = ("--open-registration", "--no-rate-limits")
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first = Server(first_dir, free_port(), *flags, env=env)
    servers = [first]
    try:
        first.wait_ready(START_BUDGET)
        # One server identity: the second process signs with the first one's key.
        second_dir.mkdir()
        shutil.copy(first_dir / "signing.key", second_dir / "signing.key")
        second = Server(second_dir, free_port(), *flags, env=env)
        servers.append(second)
        second.wait_ready(START_BUDGET)
        yield f"http://127.0.0.1:{first.port}", f"http://127.0.0.1:{second.port}"
    finally:
        for server in servers:
            assert server.stop() == 0, server.log.read_text()


async def register(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, str]:
    url = f"{base}/_matrix/client/v3/register"
    body: dict[str, Any] = {"username": name, "password": "secret pw"}
    async with session.post(url, json=body) as resp:
        session_id = (await resp.json())["session"]
    body["auth"] = {"type": "m.login.dummy", "session": session_id}
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    return {"Authorization": f"Bearer {data['access_token']}"}


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    async with session.request(method, url, json=body, headers=headers, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_send_on_one_process_wakes_sync_on_the_other(two_servers: tuple[str, str]) -> None:
    a, b = two_servers
    api_a, api_b = f"{a}/_matrix/client/v3", f"{b}/_matrix/client/v3"
    async with aiohttp.ClientSession() as session:
        alice = await register(session, a, "alice")
        bob = await register(session, b, "bob")
        room = await call(session, "POST", f"{api_a}/createRoom", alice, {"preset": "public_chat"})
        room_id = room["room_id"]
        await call(session, "POST", f"{api_b}/join/{room_id}", bob, {})
        token = (await call(session, "GET", f"{api_b}/sync", bob))["next_batch"]

        async def poll(since: str) -> Any:
            params = {"since": since, "timeout": "20000"}
            return await call(session, "GET", f"{api_b}/sync", bob, params=params)

        async def settle(since: str) -> str:
            """Until the long-poll has nothing to say (presence updates may trail)."""
            while True:
                params = {"since": since, "timeout": "300"}
                result = await call(session, "GET", f"{api_b}/sync", bob, params=params)
                if result["next_batch"] == since:
                    return since
                since = result["next_batch"]

        for i in range(3):
            token = await settle(token)
            waiting = asyncio.create_task(poll(token))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            started = time.monotonic()
            await call(
                session,
                "PUT",
                f"{api_a}/rooms/{room_id}/send/m.room.message/t{i}",
                alice,
                {"msgtype": "m.text", "body": f"across {i}"},
            )
            # The first answer may be the sender's presence; the message follows at once.
            bodies: list[str] = []
            while not bodies:
                result = await asyncio.wait_for(waiting, 5)
                token = result["next_batch"]
                room = result.get("rooms", {}).get("join", {}).get(room_id, {})
                bodies = [e["content"]["body"] for e in room.get("timeline", {}).get("events", [])]
                waiting = asyncio.create_task(poll(token))
            elapsed = time.monotonic() - started
            waiting.cancel()
            assert bodies == [f"across {i}"]
            assert elapsed < 0.5, elapsed

        token = await settle(token)
        # The token from process B works on process A too, and nothing repeats.
        result = await call(session, "GET", f"{api_a}/sync", bob, params={"since": token})
        assert "rooms" not in result
