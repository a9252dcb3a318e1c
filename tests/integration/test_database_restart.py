"""PostgreSQL restarts under a running homeserver (a minor upgrade, a reboot, a failover).

While the database is away, requests get a quick 503 M_UNKNOWN with Retry-After, never
a hang or a 500; once it is back the server serves again within seconds, without a
restart of its own. A /sync long-poll held across the restart stays open (the notifier
wakes it when its LISTEN connection is back, it finds nothing new and waits on), and a
message sent after the restart wakes it, on this process and on another one sharing the
database. Everything acknowledged before the restart is still there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import build_app
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.homeserver import Homeserver
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core import migrations
from homeserver.storage.core.embedded_postgres import read_postmaster_pid
from homeserver.storage.core.pool import Database
from tests.integration.conftest import CLIENT_V3, RoomUser, make_config
from tests.integration.own_postgres import (
    DebianCluster,
    EmbeddedCluster,
    OwnCluster,
    debian_available,
)
from tests.integration.test_process import Server, data_dir, free_port
from tests.integration.test_push_gateway import LOOPBACK, Gateway, gateway, set_pusher
from tests.integration.test_sync_multiprocess import call, register

__all__ = ["data_dir", "gateway"]  # fixtures

# Budgets: an answer while the database is away, and serving again once it is back.
OUTAGE_ANSWER_S = 2.0
RECOVERY_S = 3.0
START_BUDGET = 30.0
STOP_BUDGET_S = 30.0  # a fast shutdown still writes a checkpoint: slow on a busy machine
OPEN = ("--open-registration", "--no-rate-limits", "--no-presence-enabled")


@pytest.fixture(params=["embedded", "external"])
def cluster(request: pytest.FixtureRequest) -> Iterator[OwnCluster]:
    if request.param == "external" and not debian_available():
        pytest.skip("needs the Debian PostgreSQL binaries")
    own: OwnCluster = EmbeddedCluster() if request.param == "embedded" else DebianCluster()
    try:
        migrations.upgrade(own.conninfo)
        yield own
    finally:
        own.destroy()


@dataclass
class Process:
    """One in-process homeserver on the cluster (two share it like two worker processes)."""

    hs: Homeserver
    db: Database
    client: TestClient[Any, Any]


@pytest.fixture
async def processes(cluster: OwnCluster, tmp_path: Path) -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    try:
        for name in ("a", "b"):
            # No presence: only the messages of the test wake the long-polls.
            config = make_config(tmp_path / name, **{**LOOPBACK, "presence.enabled": False})
            if started:  # one server identity, as worker processes share it
                (tmp_path / name / "signing.key").write_bytes(
                    (tmp_path / "a" / "signing.key").read_bytes()
                )
            db = Database(cluster.conninfo, size=4)
            await db.open()
            hs = build_homeserver(
                config=config,
                db=db,
                signing_key=load_or_create_signing_key(config.signing_key_file),
            )
            await hs.start()
            client = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
            await client.start_server()
            started.append(Process(hs, db, client))
        yield started
    finally:
        for process in started:
            await process.client.close()
            await process.hs.close()
            await process.db.close()


async def _until_served(user: RoomUser, budget: float) -> float:
    """Seconds until a request that needs the database succeeds again."""
    start = time.monotonic()
    while True:
        status, body = await user.get("/v3/joined_rooms")
        if status == 200:
            return time.monotonic() - start
        assert status == 503, (status, body)
        assert time.monotonic() - start < budget, f"still {status} after {budget}s: {body}"
        await asyncio.sleep(0.02)


async def _assert_retryable(user: RoomUser, method: str, path: str, body: Any = None) -> None:
    start = time.monotonic()
    resp = await user.client.request(
        method, f"{CLIENT_V3}{path}", json=body if body is not None else {}, headers=user.headers
    )
    elapsed = time.monotonic() - start
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["errcode"] == "M_UNKNOWN"
    assert int(resp.headers["Retry-After"]) >= 1
    assert elapsed < OUTAGE_ANSWER_S, f"{method} {path} took {elapsed:.2f}s"


def _timeline_ids(sync: dict[str, Any], room_id: str) -> list[str]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e["event_id"] for e in room.get("timeline", {}).get("events", [])]


async def _long_poll(user: RoomUser, since: str, timeout_ms: int = 60_000) -> dict[str, Any]:
    status, body = await user.get("/v3/sync", since=since, timeout=str(timeout_ms))
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def test_serves_again_after_a_restart_and_wakes_held_long_polls(
    cluster: OwnCluster, processes: list[Process]
) -> None:
    a, b = processes
    alice = await RoomUser.make(a.client, "alice")
    bob = await RoomUser.make(b.client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    acknowledged = [await alice.say(room_id, f"before {i}") for i in range(3)]
    alice_since = (await alice.get("/v3/sync"))[1]["next_batch"]
    bob_since = (await bob.get("/v3/sync"))[1]["next_batch"]
    held_alice = asyncio.create_task(_long_poll(alice, alice_since))
    held_bob = asyncio.create_task(_long_poll(bob, bob_since))
    await asyncio.sleep(0.3)
    assert not held_alice.done() and not held_bob.done()

    cluster.stop()
    await _assert_retryable(alice, "GET", "/joined_rooms")
    await _assert_retryable(alice, "PUT", f"/rooms/{room_id}/send/m.room.message/outage", {})
    await _assert_retryable(bob, "GET", f"/rooms/{room_id}/messages", None)
    assert not held_alice.done() and not held_bob.done()

    await asyncio.to_thread(cluster.start)  # serving (503) meanwhile
    recovery_a = await _until_served(alice, RECOVERY_S)
    recovery_b = await _until_served(bob, RECOVERY_S)
    print(f"serving again after {recovery_a:.3f}s (a), then {recovery_b:.3f}s more (b)")
    await asyncio.sleep(0.5)  # the notifiers reconnect and wake the held polls, which wait on
    assert not held_alice.done() and not held_bob.done()

    fresh_alice = asyncio.create_task(_long_poll(alice, alice_since))
    await asyncio.sleep(0.2)
    after = await alice.say(room_id, "after the restart")
    woken = await asyncio.wait_for(asyncio.gather(held_alice, fresh_alice, held_bob), 5)
    for sync in woken:
        assert after in _timeline_ids(sync, room_id)

    status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert status == 200, page
    stored = {e["event_id"] for e in page["chunk"]}
    assert set(acknowledged) | {after} <= stored


async def test_push_delivery_resumes_after_a_restart(
    cluster: OwnCluster, processes: list[Process], gateway: Gateway
) -> None:
    """The push sender's advisory-lock connection dies with the database; the next
    delivery takes its lock on a new one. Delivery is at least once: a push whose
    cursor update the restart cut off is sent again."""
    a = processes[0]
    alice = await RoomUser.make(a.client, "alice")
    bob = await RoomUser.make(a.client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await set_pusher(bob, gateway, "bob-key")
    before = await alice.say(room_id, "before")
    await gateway.wait_for(1)

    cluster.stop()
    await asyncio.to_thread(cluster.start)
    await _until_served(alice, RECOVERY_S)
    after = await alice.say(room_id, "after")
    deadline = time.monotonic() + RECOVERY_S
    while after not in (pushed := [n["event_id"] for n in gateway.received]):
        assert time.monotonic() < deadline, pushed
        await gateway.wait_for(len(pushed) + 1, within=deadline - time.monotonic())
    assert set(pushed) == {before, after}


# ---- `homeserver run` as a real process


async def _real_server_rides_out(server: Server, restart: Callable[[], Awaitable[None]]) -> None:
    """Chat on `server`, `restart()` its database, check it serves again and loses nothing."""
    base = f"http://127.0.0.1:{server.port}"
    api = f"{base}/_matrix/client/v3"
    async with aiohttp.ClientSession() as session:
        alice = await register(session, base, "alice")
        room_id = (await call(session, "POST", f"{api}/createRoom", alice, {}))["room_id"]
        acknowledged = []
        for i in range(3):
            url = f"{api}/rooms/{room_id}/send/m.room.message/before{i}"
            reply = await call(session, "PUT", url, alice, {"msgtype": "m.text", "body": "hi"})
            acknowledged.append(reply["event_id"])
        since = (await call(session, "GET", f"{api}/sync", alice))["next_batch"]
        held = asyncio.create_task(
            call(session, "GET", f"{api}/sync", alice, params={"since": since, "timeout": "60000"})
        )

        await restart()
        statuses: set[int] = set()
        start = time.monotonic()
        while True:
            async with session.get(f"{api}/joined_rooms", headers=alice) as resp:
                statuses.add(resp.status)
                if resp.status == 200:
                    break
                assert resp.headers["Retry-After"] == "1"
            assert time.monotonic() - start < RECOVERY_S * 3, statuses
            await asyncio.sleep(0.02)
        print(f"serving again {time.monotonic() - start:.3f}s after the restart; saw {statuses}")
        assert statuses <= {200, 503}
        assert not held.done()

        url = f"{api}/rooms/{room_id}/send/m.room.message/after"
        after = (await call(session, "PUT", url, alice, {"msgtype": "m.text", "body": "hi"}))[
            "event_id"
        ]
        assert after in _timeline_ids(await asyncio.wait_for(held, 5), room_id)
        page = await call(
            session, "GET", f"{api}/rooms/{room_id}/messages", alice, params={"dir": "b"}
        )
        assert set(acknowledged) | {after} <= {e["event_id"] for e in page["chunk"]}


async def test_real_server_on_an_external_database_rides_out_its_restart(tmp_path: Path) -> None:
    if not debian_available():
        pytest.skip("needs the Debian PostgreSQL binaries")
    cluster = DebianCluster()
    server: Server | None = None
    try:
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        server = Server(tmp_path / "data", free_port(), "--database-url", url, *OPEN)
        server.wait_ready(START_BUDGET)

        async def restart() -> None:
            await asyncio.to_thread(cluster.stop)
            async with aiohttp.ClientSession() as session:
                await _assert_503_quickly(session, server)
            await asyncio.to_thread(cluster.start)

        await _real_server_rides_out(server, restart)
    finally:
        if server is not None:
            assert server.stop() == 0
        cluster.destroy()
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert log.count("the database is unavailable") == 1, log


async def test_real_server_rides_out_a_crash_of_its_embedded_database(data_dir: Path) -> None:
    """A backend killed (as by the OOM killer): PostgreSQL ends every connection, recovers
    from its log and accepts connections again, all within the same postmaster."""
    server = Server(data_dir, free_port(), *OPEN)
    try:
        server.wait_ready(START_BUDGET)

        async def crash() -> None:
            backends = _client_backends(data_dir / "postgres")
            os.kill(backends[0], signal.SIGKILL)
            # The postmaster ends all the others, then recovers.
            deadline = time.monotonic() + STOP_BUDGET_S
            while _any_alive(backends):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

        await _real_server_rides_out(server, crash)
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log.read_text(), server.log.read_text()


async def test_real_server_starts_its_embedded_database_again(data_dir: Path) -> None:
    """The embedded PostgreSQL stopped under the server (as `pg_ctl stop -m fast` would):
    the server starts it again and serves on."""
    server = Server(data_dir, free_port(), *OPEN)
    try:
        server.wait_ready(START_BUDGET)

        async def stop_fast() -> None:
            info = read_postmaster_pid(data_dir / "postgres")
            assert info is not None
            os.kill(info[0], signal.SIGINT)
            deadline = time.monotonic() + STOP_BUDGET_S
            while _any_alive([info[0]]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

        await _real_server_rides_out(server, stop_fast)
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert log.count("the embedded PostgreSQL exited") == 1, log


async def _assert_503_quickly(session: aiohttp.ClientSession, server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/_matrix/client/v3/publicRooms"
    for _ in range(20):
        start = time.monotonic()
        async with session.get(url) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["errcode"] == "M_UNKNOWN"
        assert time.monotonic() - start < OUTAGE_ANSWER_S


def _any_alive(pids: list[int]) -> bool:
    """Whether any of these processes still runs (an exited child not yet reaped by its
    parent is a zombie: state Z)."""
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            return True
    return False


def _client_backends(pgdata: Path) -> list[int]:
    """Pids of the backends serving the homeserver's connections."""
    info = read_postmaster_pid(pgdata)
    assert info is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == info[0] and title.startswith(b"postgres: postgres homeserver"):
            found.append(int(entry.name))
    assert found
    return found
