"""A homeserver process killed with SIGKILL while its users send messages: once it is
restarted on the same database, every event it acknowledged reaches the other server
in the room, including an event acknowledged only when the client retried its send
after the restart (the event had committed just before the crash)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from homeserver.services.homeserver import Homeserver
from homeserver.storage.rooms import events as event_store
from tests.conftest import PostgresServer
from tests.integration.conftest import RoomUser
from tests.integration.peers import free_port
from tests.integration.test_federation_rooms import hs_of, peer
from tests.integration.test_process import Server

# Rooms written at once, so that the kill finds some of them between the commit of an
# event and the answer to its send.
ROOMS = 12
ACKS_BEFORE_KILL = 100
STEP_S = 30.0  # the budget of each step: start, set up, send, restart, deliver
REQUEST_S = 10.0


class ClientApi:
    """One user's client API calls to a server process."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.session = session
        self.base = base
        self.token = token

    async def call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method,
            f"{self.base}/_matrix/client/v3{path}",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_S),
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, f"{method} {path}: {status} {answer}"
        return answer

    async def register(self, username: str) -> ClientApi:
        body: dict[str, Any] = {"username": username, "password": "secret pw"}
        status, answer = await self.call("POST", "/register", body)
        assert status == 401, answer
        body["auth"] = {"type": "m.login.dummy", "session": answer["session"]}
        answer = await self.ok("POST", "/register", body)
        return ClientApi(self.session, self.base, answer["access_token"])


class Sending:
    """Messages sent from one room per task until the server dies; what was
    acknowledged, and the sends that were in flight when it died."""

    def __init__(self, alice: ClientApi, kill: Callable[[], None]) -> None:
        self.alice = alice
        self.kill = kill
        self.killed = False
        self.acked: dict[str, str] = {}  # event id -> body
        self.in_flight: list[tuple[str, str, str]] = []  # (room id, txn id, body)

    async def room(self, room_id: str, index: int) -> None:
        n = 0
        while not self.killed:
            txn_id, text = f"r{index}m{n}", f"room {index} message {n}"
            n += 1
            try:
                await self.send(room_id, txn_id, text)
            except (aiohttp.ClientError, TimeoutError):
                self.in_flight.append((room_id, txn_id, text))
                return
            if len(self.acked) >= ACKS_BEFORE_KILL and not self.killed:
                self.killed = True
                self.kill()

    async def send(self, room_id: str, txn_id: str, text: str) -> None:
        path = f"/rooms/{room_id}/send/m.room.message/{txn_id}"
        answer = await self.alice.ok("PUT", path, {"msgtype": "m.text", "body": text})
        self.acked[answer["event_id"]] = text


class Process:
    """Our server as a real process on a database of its own, restartable on it."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "a"
        self.config = tmp_path / "a.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "server_name": self.name,
                    "open_registration": True,
                    "database": {"url": database_url},
                    "rate_limits": {"enabled": False},
                    "federation": {
                        "use_tls": False,
                        "verify_tls": False,
                        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
                    },
                }
            )
        )
        self.server: Server | None = None

    async def start(self) -> None:
        self.server = Server(self.data_dir, self.port, "--config", str(self.config))
        async with asyncio.timeout(STEP_S):
            await asyncio.to_thread(self.server.wait_ready, STEP_S)

    def kill(self) -> None:
        """SIGKILL, at once: no handler, no clean-up, no flush."""
        assert self.server is not None
        os.kill(self.server.process.pid, signal.SIGKILL)

    async def wait_killed(self) -> None:
        assert self.server is not None
        code = await asyncio.to_thread(self.server.process.wait, STEP_S)
        assert code == -signal.SIGKILL
        self.server.log_file.close()
        self.server = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
async def process(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[Process]:
    started = Process(tmp_path, postgres.create_database())
    yield started
    started.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def rooms_with(alice: ClientApi, bob: RoomUser, server_name: str) -> list[str]:
    """Rooms alice creates and bob, on the other server, joins."""
    rooms = []
    for _ in range(ROOMS):
        room_id = (await alice.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await bob.ok("POST", f"/join/{room_id}?server_name={server_name}")
        rooms.append(room_id)
    return rooms


async def undelivered(hs: Homeserver, event_ids: set[str]) -> set[str]:
    """Those of the events that are not in `hs`'s timelines (within the step's budget)."""
    missing = set(event_ids)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STEP_S):
            while missing:
                async with hs.db.pool.connection() as conn:
                    rows = await event_store.get_events(conn, list(missing))
                missing -= {e for e, row in rows.items() if row.stream_ordering is not None}
                await asyncio.sleep(0.1)
    return missing


async def test_every_acknowledged_event_survives_a_kill(
    process: Process, homeserver_client: Callable[..., Any], session: aiohttp.ClientSession
) -> None:
    await process.start()
    b = await peer(homeserver_client)
    bob = await RoomUser.make(b, "bob")
    async with asyncio.timeout(STEP_S):
        alice = await ClientApi(session, process.base).register("alice")
        rooms = await rooms_with(alice, bob, process.name)

    sending = Sending(alice, process.kill)
    async with asyncio.timeout(STEP_S):
        await asyncio.gather(*(sending.room(r, i) for i, r in enumerate(rooms)))
    assert sending.killed
    await process.wait_killed()

    await process.start()
    async with asyncio.timeout(STEP_S):
        # The client retries what got no answer, as clients do; a send that had
        # committed before the crash is acknowledged now with its first event.
        for room_id, txn_id, text in sending.in_flight:
            await sending.send(room_id, txn_id, text)

    lost = await undelivered(hs_of(b), set(sending.acked))
    assert not lost, f"acknowledged but never delivered: {sorted(sending.acked[e] for e in lost)}"
