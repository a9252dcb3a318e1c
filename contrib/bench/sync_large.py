"""Benchmark /sync for a large account: this server against Synapse, one run.

    python contrib/bench/sync_large.py [--rooms 1000] [--members 3] [--messages 3]
                                       [--absence 3000] [--only ours|synapse]
                                       [--analyze]

For each server (a fresh database each on the same PostgreSQL, one after the other)
a user joins --rooms rooms, each with --members members (the user included) and
--messages messages, then:

(a) initial sync of that user (median of 3; each repeat varies a no-op filter,
    since Synapse caches sync responses), with the server process's peak RSS
    during it (VmHWM, reset before each request) above its RSS before;
(b) a sync after a long absence: from a token taken before the other members
    sent --absence messages spread across all the rooms (median of 3), with its
    peak RSS the same way.

Each figure comes with the CPU the server process and its database's backends spent
on it (median per sync): on a loaded machine, CPU moves less than time does. The
database is left unanalyzed, as this machine's PostgreSQL (no autovacuum) leaves
it: our plans must not depend on statistics. --analyze analyzes it after each
build, as autovacuum would have done. Both answers are checked alike for both
servers: every room joined, and after the absence every room holding its newest
message. Then it prints Synapse's figures over ours.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    bounded,
    cpu_delta,
    free_port,
    processes_cpu,
    rss_kib,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import Synapse
from contrib.synapse_harness import venv_dir

SETUP_CONCURRENCY = 16


@dataclass
class Timing:
    seconds: float = 0.0
    peak_above_kib: int = 0  # peak RSS during the request above the RSS before it
    server_cpu: float = 0.0
    db_cpu: float = 0.0


@dataclass
class Server:
    """The process under test and its database, whose backends' CPU is counted."""

    pid: int
    databases: Databases
    dbname: str

    def analyze(self) -> None:
        params: dict[str, Any] = conninfo_to_dict(self.databases.admin_url)
        params["dbname"] = self.dbname
        with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
            conn.execute("ANALYZE")

    def cpu(self) -> dict[int, float]:
        backends = self.databases.backend_pids(self.dbname)
        return processes_cpu([self.pid, *backends])


@dataclass
class Figures:
    initial: Timing
    absence: Timing
    setup_seconds: float = 0.0
    absence_setup_seconds: float = 0.0


def reset_peak(pid: int) -> None:
    """Restart the process's VmHWM from its current RSS (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


async def build(owner: Api, members: list[Api], rooms: int, messages: int) -> list[str]:
    """`rooms` public rooms of `owner`, each joined by `members` and given `messages`."""
    room_ids: list[str] = []

    async def one_room(index: int) -> None:
        body = {
            "preset": "public_chat",
            "name": f"Room {index}",
            "creation_content": {"org.example.bench": index},
        }
        room_id = (await owner.call("POST", "/createRoom", body))["room_id"]
        for member in members:
            await member.call("POST", f"/join/{room_id}", {})
        everyone = [owner, *members]
        for i in range(messages):
            await everyone[i % len(everyone)].send(room_id, f"message {i} in room {index}")
        room_ids.append(room_id)

    await bounded([functools.partial(one_room, i) for i in range(rooms)], SETUP_CONCURRENCY)
    return room_ids


async def timed_sync(user: Api, server: Server, repeats: int, **params: str) -> tuple[Timing, Any]:
    """Median time, CPU and peak RSS rise of `repeats` syncs (after one warm-up)."""
    pid = server.pid
    seconds, peaks, server_cpu, db_cpu = [], [], [], []
    result: Any = None
    for i in range(repeats + 1):
        # The filter changes nothing but defeats Synapse's sync response cache.
        sync_filter = {"account_data": {"not_types": [f"x.bench.{i}.{time.time_ns()}"]}}
        cpu_before = server.cpu()
        before = rss_kib(pid)
        reset_peak(pid)
        started = time.monotonic()
        result = await user.sync(filter=json.dumps(sync_filter), **params)
        elapsed = time.monotonic() - started
        peak = peak_kib(pid) - before
        cpu_after = server.cpu()
        if i:
            seconds.append(elapsed)
            peaks.append(peak)
            server_cpu.append(cpu_after[pid] - cpu_before[pid])
            db_cpu.append(cpu_delta(cpu_before, {k: v for k, v in cpu_after.items() if k != pid}))
    timing = Timing(
        statistics.median(seconds),
        max(peaks),
        statistics.median(server_cpu),
        statistics.median(db_cpu),
    )
    return timing, result


def check_answer(result: Any, rooms: list[str], newest: dict[str, str] | None) -> None:
    joined = result["rooms"]["join"]
    missing = set(rooms) - set(joined)
    if missing:
        raise RuntimeError(f"{len(missing)} rooms missing from the sync, e.g. {min(missing)}")
    for room_id, body in (newest or {}).items():
        events = joined[room_id]["timeline"]["events"]
        if not events or events[-1].get("content", {}).get("body") != body:
            raise RuntimeError(f"{room_id} does not end with {body!r}")


async def absence(members: list[Api], rooms: list[str], count: int) -> dict[str, str]:
    """`count` messages from the members, round-robin over the rooms; the newest per room."""
    newest: dict[str, str] = {}

    async def send(i: int) -> None:
        room_id = rooms[i % len(rooms)]
        body = f"while away {i}"
        await members[i % len(members)].send(room_id, body)
        newest[room_id] = body

    # Each room's sends run in order (one worker per room slot), so "newest" is exact.
    async def lane(start: int) -> None:
        for i in range(start, count, SETUP_CONCURRENCY):
            await send(i)

    await asyncio.gather(*(lane(k) for k in range(SETUP_CONCURRENCY)))
    return newest


def describe(timing: Timing) -> str:
    return (
        f"{timing.seconds * 1000:.0f} ms (server CPU {timing.server_cpu * 1000:.0f} ms,"
        f" database CPU {timing.db_cpu * 1000:.0f} ms),"
        f" peak RSS +{timing.peak_above_kib / 1024:.1f} MiB"
    )


async def measure(name: str, base: str, server: Server, args: argparse.Namespace) -> Figures:
    pid = server.pid
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        anonymous = Api(session, base)
        reader = await anonymous.register("reader")
        members = [await anonymous.register(f"member{i}") for i in range(args.members - 1)]
        started = time.monotonic()
        rooms = await build(reader, members, args.rooms, args.messages)
        setup = time.monotonic() - started
        print(f"  {name}: {args.rooms} rooms built in {setup:.0f}s", flush=True)
        if args.analyze:
            server.analyze()
        initial, result = await timed_sync(reader, server, 3)
        check_answer(result, rooms, None)
        token = result["next_batch"]
        print(
            f"  {name}: initial sync {describe(initial)} (RSS {rss_kib(pid) / 1024:.0f} MiB)",
            flush=True,
        )
        started = time.monotonic()
        newest = await absence(members or [reader], rooms, args.absence)
        absence_setup = time.monotonic() - started
        print(f"  {name}: {args.absence} messages sent in {absence_setup:.0f}s", flush=True)
        if args.analyze:
            server.analyze()
        away, result = await timed_sync(reader, server, 3, since=token)
        check_answer(result, rooms, newest)
        print(f"  {name}: sync after the absence {describe(away)}", flush=True)
    return Figures(initial, away, setup, absence_setup)


def report(ours: Figures, synapse: Figures, args: argparse.Namespace) -> None:
    def ratio(theirs: float, mine: float) -> str:
        return f"{theirs / mine:.1f}x" if mine > 0 else "n/a"

    print("\nSynapse / ours (higher is better for us):")
    for label, mine, theirs, target in (
        (f"initial sync, {args.rooms} rooms", ours.initial, synapse.initial, " (target >= 10x)"),
        (f"sync after {args.absence} messages away", ours.absence, synapse.absence, ""),
    ):
        print(
            f"  {label}: ours {mine.seconds * 1000:.0f} ms, Synapse {theirs.seconds * 1000:.0f} ms:"
            f" {ratio(theirs.seconds, mine.seconds)}{target}; server + database CPU ours"
            f" {(mine.server_cpu + mine.db_cpu) * 1000:.0f} ms, Synapse"
            f" {(theirs.server_cpu + theirs.db_cpu) * 1000:.0f} ms:"
            f" {ratio(theirs.server_cpu + theirs.db_cpu, mine.server_cpu + mine.db_cpu)};"
            f" peak RSS rise ours {mine.peak_above_kib / 1024:.1f} MiB,"
            f" Synapse {theirs.peak_above_kib / 1024:.1f} MiB"
        )
    print(
        f"  building the fixture: ours {ours.setup_seconds:.0f}s,"
        f" Synapse {synapse.setup_seconds:.0f}s; the absence's messages: ours"
        f" {ours.absence_setup_seconds:.0f}s, Synapse {synapse.absence_setup_seconds:.0f}s"
    )


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sync-large-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        try:
            if args.only in (None, "ours"):
                database = databases.create()
                process, base = start_ours(workdir, database)
                try:
                    server = Server(process.pid, databases, database["dbname"])
                    results["ours"] = await measure("ours", base, server, args)
                finally:
                    stop_process(process)
            if args.only in (None, "synapse"):
                database = databases.create()
                synapse = Synapse(
                    workdir / "synapse",
                    free_port(),
                    database,
                    bcrypt_rounds=4,
                    venv=args.synapse_venv,
                )
                synapse.start()
                try:
                    assert synapse.process is not None
                    server = Server(synapse.process.pid, databases, database["dbname"])
                    results["synapse"] = await measure("synapse", synapse.base_url, server, args)
                finally:
                    synapse.stop()
        finally:
            databases.drop_all()
    if len(results) == 2:
        report(results["ours"], results["synapse"], args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3, help="per room, the user included")
    parser.add_argument("--messages", type=int, default=3, help="per room at the start")
    parser.add_argument("--absence", type=int, default=3000, help="messages while away")
    parser.add_argument("--only", choices=("ours", "synapse"))
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE after each build, as autovacuum would"
    )
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
