"""`GET /health` for a load balancer, and the drain of a real process on SIGTERM: no new
connections, in-flight requests finished, long-polls answered at once, exit 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import PostgresServer
from tests.integration.own_postgres import DebianCluster, debian_available
from tests.integration.test_process import Server, clean_env, free_port
from tests.integration.test_sync_multiprocess import call, register

START_BUDGET = 30.0
# SIGTERM to exit: the long-poll is answered and the slow upload finished well within.
DRAIN_BUDGET_S = 15.0
OPEN = ("--open-registration", "--no-rate-limits", "--no-presence-enabled")


async def health(session: aiohttp.ClientSession, port: int) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
        return resp.status, await resp.text()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_sigterm_drains_in_flight_work_and_hands_back_long_polls(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    env = clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())
    server = Server(tmp_path / "data", free_port(), *OPEN, env=env)
    base = f"http://127.0.0.1:{server.port}"
    try:
        server.wait_ready(START_BUDGET)
        async with aiohttp.ClientSession() as session:
            assert await health(session, server.port) == (200, "OK")
            alice = await register(session, base, "alice")
            api = f"{base}/_matrix/client/v3"
            since = (await call(session, "GET", f"{api}/sync", alice))["next_batch"]
            long_poll = asyncio.create_task(
                call(
                    session,
                    "GET",
                    f"{api}/sync",
                    alice,
                    params={"since": since, "timeout": "60000"},
                )
            )
            ss_path = f"{base}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
            window = {"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1}}}
            pos = (await call(session, "POST", ss_path, alice, body=window))["pos"]
            ss_poll = asyncio.create_task(
                call(
                    session,
                    "POST",
                    ss_path,
                    alice,
                    body=window,
                    params={"pos": pos, "timeout": "60000"},
                )
            )
            # An upload whose body is still arriving when the signal comes.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            body = b"x" * 2000
            writer.write(
                b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\n"
                + f"Authorization: {alice['Authorization']}\r\n".encode()
                + b"Content-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:1000]
            )
            await writer.drain()
            await asyncio.sleep(1.0)  # the long-poll is waiting, the upload in flight
            assert not long_poll.done() and not ss_poll.done()

            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(long_poll, 5)
            assert time.monotonic() - signalled < 5
            assert answer["next_batch"]  # an ordinary (empty) sync: the client syncs again
            # A sliding-sync long-poll too, at once, with a position to go on from.
            ss_answer = await asyncio.wait_for(ss_poll, 5)
            assert time.monotonic() - signalled < 5
            assert ss_answer["pos"]  # the client goes on from there

            deadline = time.monotonic() + 2
            while not refused(server.port):
                assert time.monotonic() < deadline, "a draining process takes no new connections"
                await asyncio.sleep(0.1)
            print(f"refused after {time.monotonic() - signalled:.2f}s")
            writer.write(body[1000:])
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 200"), status_line
            rest = await asyncio.wait_for(reader.read(), 10)
            assert b"mxc://" in rest
            writer.close()

        code = await asyncio.to_thread(server.process.wait, DRAIN_BUDGET_S)
        assert code == 0
        assert time.monotonic() - signalled < DRAIN_BUDGET_S
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
    log = server.log.read_text()
    assert "Traceback" not in log, log


async def test_health_is_503_while_the_database_is_away(tmp_path: Path) -> None:
    if not debian_available():
        pytest.skip("needs the Debian PostgreSQL binaries")
    cluster = DebianCluster()
    url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    server = Server(tmp_path / "data", free_port(), "--database-url", url, *OPEN)
    try:
        server.wait_ready(START_BUDGET)
        async with aiohttp.ClientSession() as session:
            assert await health(session, server.port) == (200, "OK")
            await asyncio.to_thread(cluster.stop)
            start = time.monotonic()
            status, text = await health(session, server.port)
            assert (status, text) == (503, "database unavailable")
            assert time.monotonic() - start < 3
            await asyncio.to_thread(cluster.start)
            deadline = time.monotonic() + 10
            while (await health(session, server.port))[0] != 200:
                assert time.monotonic() < deadline, "ready again once the database is back"
                await asyncio.sleep(0.1)
    finally:
        assert server.stop() == 0
        cluster.destroy()
