"""A PostgreSQL restart under a steady stream of sends through the cluster: requests fail
with a retryable error while it is down, every process serves again within seconds of
its return, and nothing acknowledged is lost or doubled."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import SETTINGS
from tests.cluster.harness import Cluster, ready
from tests.cluster.test_cluster import (
    User,
    room_of_three,
    send_until_acknowledged,
    whole_timeline,
)
from tests.integration.own_postgres import DebianCluster, debian_available

BACK_BUDGET_S = 10.0


async def test_database_restart_under_load_loses_nothing_acknowledged() -> None:
    if not debian_available():
        pytest.skip("needs the Debian PostgreSQL binaries")
    database = DebianCluster()
    try:
        with tempfile.TemporaryDirectory(prefix="hs-cluster-pg-") as tmp:
            url = f"postgresql://postgres@127.0.0.1:{database.port}/postgres"
            cluster = Cluster(Path(tmp), url, 3, **SETTINGS)
            try:
                await _stream_across_a_restart(cluster, database)
            finally:
                logs = cluster.logs()
                assert cluster.stop() == [0, 0, 0], logs
                assert "Traceback" not in logs, logs
    finally:
        database.destroy()


async def _stream_across_a_restart(cluster: Cluster, database: DebianCluster) -> None:
    async with aiohttp.ClientSession() as session:
        users, room_id = await room_of_three(cluster, session)
        acknowledged: dict[str, list[tuple[str, str]]] = {u.user_id: [] for u in users}
        stop = asyncio.Event()

        async def stream(user: User) -> None:
            n = 0
            while not stop.is_set():
                body = f"{user.user_id} {n}"
                event_id = await send_until_acknowledged(user, cluster.url, room_id, f"s{n}", body)
                acknowledged[user.user_id].append((body, event_id))
                n += 1

        senders = [asyncio.create_task(stream(u)) for u in users]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(database.stop)
        before = sum(len(a) for a in acknowledged.values())
        await asyncio.sleep(1.5)
        await asyncio.to_thread(database.start)
        back = time.monotonic()
        while not all(await asyncio.gather(*(_healthy(p) for p in cluster.ports))):
            assert time.monotonic() - back < BACK_BUDGET_S, "processes not back in time"
            await asyncio.sleep(0.1)
        took = time.monotonic() - back
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*senders), 60)
        assert sum(len(a) for a in acknowledged.values()) > before

        timeline = await whole_timeline(users[0], cluster.url, room_id)
        for user in users:
            mine = [
                (e["content"]["body"], e["event_id"])
                for e in timeline
                if e["sender"] == user.user_id and e["type"] == "m.room.message"
            ]
            assert mine == acknowledged[user.user_id]
    print(f"all processes ready {took:.1f}s after the database was back")


async def _healthy(port: int) -> bool:
    return await asyncio.to_thread(ready, port)
