"""Memory over a homeserver's whole life: this server against Synapse, one run.

    python contrib/bench/life.py [--users 20] [--rooms 10] [--sends 2000]
                                 [--bcrypt-rounds 12] [--only ours|synapse] [--env K=V ...]

Each server (a fresh database each on the same PostgreSQL, one after the other, each
with its default password hashing: our argon2id, Synapse's bcrypt at --bcrypt-rounds)
lives the same life: it starts; --users users register at once, then all log in at
once, twice; each user creates a room and all join the first --rooms rooms; --sends
messages go out 20 at a time across those rooms; every user syncs from scratch,
then incrementally, with long-polls held while a last round of messages goes out.

Measured all along, every 0.2 s: the server process's RSS and its peak over its
whole life (VmHWM), its peak while serving (rooms, sends, syncs and long-polls:
sampled from 3 s after the login storm, once the hashes' memory is handed back),
and the memory of the PostgreSQL backends serving that server's database (the sum
of their PSS, and of their private pages), read from /proc/PID/smaps_rollup the same
way for both. Then it prints our figures over
Synapse's, and server plus database against Synapse plus its database.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    PASSWORD,
    Api,
    Databases,
    free_port,
    rss_kib,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import Synapse
from contrib.synapse_harness import venv_dir

SAMPLE_EVERY = 0.2
# After the login storm: time for the servers to hand back the hashes' memory before
# the serving part of the life (rooms, sends, syncs, long-polls) is measured apart.
STORM_SETTLE = 3.0


def status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} for {pid}")


def rollup_kib(pid: int) -> tuple[int, int]:
    """(PSS, private pages) of a process in KiB; (0, 0) once it is gone."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values.get("Pss", 0), values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)


@dataclass
class Peaks:
    """The highest values seen by the sampler, and the latest."""

    server_rss: int = 0
    db_pss: int = 0
    db_private: int = 0
    db_backends: int = 0
    total_pss: int = 0  # server RSS + database PSS, at the same instant
    serving_rss: int = 0  # the server's RSS once the registration and login storm is over
    latest: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Figures:
    server_peak: int = 0  # VmHWM at the end: the whole life's peak
    server_end: int = 0
    peaks: Peaks = field(default_factory=Peaks)
    phases: list[str] = field(default_factory=list)


class Sampler:
    """A thread reading the server's and its database backends' memory every 0.2 s."""

    def __init__(self, pid: int, databases: Databases, dbname: str) -> None:
        self.pid, self.databases, self.dbname = pid, databases, dbname
        self.peaks = Peaks()
        self.serving = False  # set once the storm is over and its hash memory returned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()
        # One connection held throughout: a busy server may have no slot for a new one.
        self._conn: psycopg.Connection[tuple[int]] | None = None

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def sample(self) -> tuple[int, int, int]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.databases.admin_url, autocommit=True)
            rows = self._conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = %s AND backend_type = 'client backend'",
                (self.dbname,),
            ).fetchall()
        backends = [int(row[0]) for row in rows]
        pss = private = 0
        for backend in backends:
            one_pss, one_private = rollup_kib(backend)
            pss, private = pss + one_pss, private + one_private
        rss = rss_kib(self.pid)
        p = self.peaks
        p.server_rss = max(p.server_rss, rss)
        p.db_pss, p.db_private = max(p.db_pss, pss), max(p.db_private, private)
        p.db_backends = max(p.db_backends, len(backends))
        p.total_pss = max(p.total_pss, rss + pss)
        if self.serving:
            p.serving_rss = max(p.serving_rss, rss)
        p.latest = (rss, pss, private)
        return p.latest

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.sample()
            except psycopg.Error:
                self._conn = None  # a busy or restarting PostgreSQL: next time


async def login(session: aiohttp.ClientSession, base: str, user_id: str) -> None:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": PASSWORD,
    }
    async with session.post(base + "/_matrix/client/v3/login", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"login: {resp.status} {await resp.text()}")


async def sends(users: list[Api], rooms: list[str], count: int, tag: str) -> None:
    for i in range(0, count, 20):
        await asyncio.gather(
            *(
                users[(i + j) % len(users)].send(rooms[(i + j) % len(rooms)], f"{tag} {i + j}")
                for j in range(min(20, count - i))
            )
        )


async def syncs(users: list[Api], rooms: list[str], count: int) -> None:
    """Initial and incremental syncs of everyone, then long-polls woken by messages."""
    tokens = [r["next_batch"] for r in await asyncio.gather(*(u.sync() for u in users))]
    for _ in range(3):
        results = await asyncio.gather(
            *(u.sync(since=t, timeout="0") for u, t in zip(users, tokens, strict=True))
        )
        tokens = [r["next_batch"] for r in results]
    polls = [
        asyncio.create_task(u.sync(since=t, timeout="30000"))
        for u, t in zip(users, tokens, strict=True)
    ]
    await asyncio.sleep(1)
    await sends(users, rooms, count, "while polled")
    await asyncio.gather(*polls)


async def live(base: str, sampler: Sampler, args: argparse.Namespace, figures: Figures) -> None:
    def phase(name: str) -> None:
        rss, pss, _ = sampler.sample()
        peak = status_kib(sampler.pid, "VmHWM")
        line = (
            f"{name}: RSS {rss / 1024:.0f} MiB, peak so far {peak / 1024:.0f} MiB,"
            f" database backends {pss / 1024:.0f} MiB PSS"
        )
        figures.phases.append(line)
        print("    " + line, flush=True)

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        anonymous = Api(session, base)
        phase("started")
        users = list(
            await asyncio.gather(*(anonymous.register(f"u{i}") for i in range(args.users)))
        )
        phase(f"{args.users} registered at once")
        for _ in range(2):
            await asyncio.gather(*(login(session, base, u.user_id) for u in users))
        phase(f"{args.users} logged in at once, twice")
        await asyncio.sleep(STORM_SETTLE)
        phase("storm settled")
        sampler.serving = True
        created: list[str] = []
        for user in users:
            created.append(
                (await user.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
            )
        rooms = created[: args.rooms]
        joins: list[Callable[[], Awaitable[object]]] = [
            functools.partial(user.call, "POST", f"/join/{room_id}", {})
            for owner, room_id in enumerate(rooms)
            for k, user in enumerate(users)
            if k != owner
        ]
        for start in range(0, len(joins), 20):
            await asyncio.gather(*(job() for job in joins[start : start + 20]))
        phase(f"{args.users} rooms created, {args.rooms} joined by all")
        await sends(users, rooms, args.sends, "message")
        phase(f"{args.sends} messages sent")
        await syncs(users, rooms, 200)
        phase("synced, long-polls woken")


async def one_life(
    name: str, base: str, pid: int, dbname: str, databases: Databases, args: argparse.Namespace
) -> Figures:
    figures = Figures()
    print(f"  {name}:", flush=True)
    with Sampler(pid, databases, dbname) as sampler:
        await live(base, sampler, args, figures)
        await asyncio.sleep(1)
        sampler.sample()
    figures.server_peak = status_kib(pid, "VmHWM")
    figures.server_end = rss_kib(pid)
    figures.peaks = sampler.peaks
    p = figures.peaks
    print(
        f"  {name}: server peak {figures.server_peak / 1024:.0f} MiB (whole life),"
        f" {p.serving_rss / 1024:.0f} MiB while serving,"
        f" end {figures.server_end / 1024:.0f} MiB; database backends peak"
        f" {p.db_pss / 1024:.0f} MiB PSS, {p.db_private / 1024:.0f} MiB private,"
        f" {p.db_backends} backends; server + database peak {p.total_pss / 1024:.0f} MiB",
        flush=True,
    )
    return figures


def report(ours: Figures, synapse: Figures) -> None:
    def line(label: str, mine: int, theirs: int, target: str = "") -> None:
        print(
            f"  {label}: ours {mine / 1024:.0f} MiB, Synapse {theirs / 1024:.0f} MiB:"
            f" {mine / theirs:.2f}{target}"
        )

    print("\nours / Synapse (lower is better for us):")
    line("server peak RSS, whole life", ours.server_peak, synapse.server_peak, " (target <= 1)")
    line(
        "server peak RSS while serving",
        ours.peaks.serving_rss,
        synapse.peaks.serving_rss,
        " (target <= 0.5)",
    )
    line("server RSS at the end", ours.server_end, synapse.server_end)
    line("database backends peak PSS", ours.peaks.db_pss, synapse.peaks.db_pss)
    line("database backends peak private", ours.peaks.db_private, synapse.peaks.db_private)
    line(
        "server peak + database peak (VmHWM + PSS)",
        ours.server_peak + ours.peaks.db_pss,
        synapse.server_peak + synapse.peaks.db_pss,
        " (target <= 1)",
    )
    line("server + database at once, sampled", ours.peaks.total_pss, synapse.peaks.total_pss)


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    env = dict(item.split("=", 1) for item in args.env)
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-life-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        try:
            if args.only in (None, "ours"):
                database = databases.create()
                process, base = start_ours(workdir, database, env)
                try:
                    results["ours"] = await one_life(
                        "ours", base, process.pid, database["dbname"], databases, args
                    )
                finally:
                    stop_process(process)
            if args.only in (None, "synapse"):
                database = databases.create()
                synapse = Synapse(
                    workdir / "synapse",
                    free_port(),
                    database,
                    bcrypt_rounds=args.bcrypt_rounds,
                    venv=args.synapse_venv,
                )
                synapse.start()
                try:
                    assert synapse.process is not None
                    results["synapse"] = await one_life(
                        "synapse",
                        synapse.base_url,
                        synapse.process.pid,
                        database["dbname"],
                        databases,
                        args,
                    )
                finally:
                    synapse.stop()
        finally:
            databases.drop_all()
    if len(results) == 2:
        report(results["ours"], results["synapse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="Synapse's default")
    parser.add_argument("--only", choices=("ours", "synapse"))
    parser.add_argument("--env", action="append", default=[], help="K=V for our server")
    parser.add_argument("--synapse-venv", type=Path, default=venv_dir())
    parser.add_argument(
        "--admin-db",
        default=DEFAULT_ADMIN_DB,
        help="PostgreSQL URL with the right to create databases",
    )
    print(f"cores: {os.cpu_count()}")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
