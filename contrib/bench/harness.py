"""Shared pieces of the side-by-side benchmarks (ours against Synapse).

Fresh PostgreSQL databases, starting our server, per-process CPU and memory,
percentiles, and a small client-API user. `synapse.py` starts Synapse.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from contrib.bench.synapse import wait_ready

PASSWORD = "benchmark password"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_ADMIN_DB = os.environ.get(
    "HOMESERVER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def processes_cpu(pids: Iterable[int]) -> dict[int, float]:
    return {pid: process_cpu(pid) for pid in pids}


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU spent between two snapshots by the processes in `after` (new ones from 0)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no RSS for {pid}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Databases:
    """Fresh databases on one PostgreSQL server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def create(self) -> dict[str, Any]:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            )
        self.names.append(name)
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = name
        return params

    def backend_pids(self, name: str) -> list[int]:
        """PostgreSQL backends serving clients of database `name`."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = %s AND backend_type = 'client backend'",
                (name,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def settled_size(self, name: str) -> tuple[int, int]:
        """(bytes of database `name`, bytes of it in use) after VACUUM and CHECKPOINT.

        In use leaves out the free space that the free space map knows of: under
        concurrent inserts PostgreSQL extends a table by many empty pages at once, so
        the plain size moves in steps that depend on timing.
        """
        params: dict[str, Any] = conninfo_to_dict(self.admin_url)
        params["dbname"] = name
        with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_freespacemap")
            conn.execute("VACUUM")
            conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT pg_database_size(current_database()), (SELECT coalesce(sum(f.avail), 0)"
                " FROM pg_class c, LATERAL pg_freespace(c.oid) f"
                " WHERE c.relkind IN ('r', 't', 'i', 'm') AND c.relpersistence = 'p')"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[0]) - int(row[1])

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_ours(
    workdir: Path, database: dict[str, Any], env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Our server on a free port, open registration, no rate limits; (process, base URL)."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    child_env.update(env or {})
    log_path = workdir / "ours.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "homeserver",
                "run",
                "--data-dir",
                str(workdir / "ours"),
                "--port",
                str(port),
                "--database-url",
                make_conninfo(**database),
                "--open-registration",
                "--no-rate-limits",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, 60, log_path)
    except Exception:
        process.kill()
        raise
    return process, base


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Api:
    """A user of one server."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.session = session
        self.server = base
        self.base = base + "/_matrix/client/v3"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.user_id = ""

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        async with self.session.request(
            method, self.base + path, json=body, params=params, headers=self.headers
        ) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def register(self, username: str) -> Api:
        """A new user `username` (open registration, m.login.dummy)."""
        body: dict[str, Any] = {"username": username, "password": PASSWORD}
        async with self.session.post(self.base + "/register", json=body) as resp:
            session_id = (await resp.json())["session"]
        body["auth"] = {"type": "m.login.dummy", "session": session_id}
        data = await Api(self.session, self.server).call("POST", "/register", body)
        user = Api(self.session, self.server, data["access_token"])
        user.user_id = data["user_id"]
        return user

    async def send(self, room_id: str, body: str) -> None:
        txn = f"b{time.monotonic_ns()}"
        await self.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )

    async def sync(self, **params: str) -> Any:
        return await self.call("GET", "/sync", params=params)


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> None:
    """Run `jobs`, at most `concurrency` at a time."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
