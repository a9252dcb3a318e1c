"""Benchmark a message into a big room, this server against Synapse, in one run.

    python contrib/bench/big_rooms.py [--sizes 300,1000] [--messages 100] [--rounds 1]
                                      [--only ours|synapse] [--synapse-venv DIR]
                                      [--admin-db URL]
                                      [--profile DIR]

Both servers run at once on the same PostgreSQL (a fresh database each, dropped at
the end), rate limits off. Each gets max(--sizes) users (registered through the
API) and, for each size N, a room that the first N of them join. Then, for each
size and round, the phases alternate between the servers (ours, Synapse, ours, ...)
so that the load of the machine, which moves, falls on both alike: the first user
sends --messages messages into the room, one at a time, and we count

- the server process's own CPU (user + system, from /proc) per message,
- separately, that of the PostgreSQL backends serving the server's database,
- the send latency (p50).

Every tenth message names a member (`member7`: their display name), which makes it
a highlight for them under the default rules. At the end each server is asked,
through /sync, for the unread counts of a member that was named, of one that was
not and of the sender (none: their own messages), and they are checked against what
was sent (exact counts: a server that counts
cheaply but wrongly fails here). Ratios are ours over Synapse's; the targets of
issue 20 are 1/10 of Synapse's server CPU and 1/4 of its database CPU per message.

Synapse moves its per-member push rows into summaries in a background job; its CPU
for that falls into the measured window only when the job runs during it, so its
database figures are, if anything, on the low side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    bounded,
    cpu_delta,
    free_port,
    process_cpu,
    processes_cpu,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import Synapse

SETUP_CONCURRENCY = 8
WARM_UP = 5
MENTION_EVERY = 10
INTEROP_VENV = Path(
    os.environ.get(
        "HOMESERVER_INTEROP_VENV", str(Path.home() / ".cache" / "homeserver-interop" / "venv")
    )
)


@dataclass
class Server:
    name: str
    base: str
    pid: int
    dbname: str
    databases: Databases
    users: list[Api] = field(default_factory=list)
    rooms: dict[int, str] = field(default_factory=dict)  # size -> room id
    sent: dict[int, int] = field(default_factory=dict)  # size -> messages sent
    named: dict[int, int] = field(default_factory=dict)  # size -> messages naming member1
    # size -> [(server CPU s, database CPU s, messages, latencies)]
    phases: dict[int, list[tuple[float, float, int, list[float]]]] = field(default_factory=dict)

    def cpu(self) -> tuple[float, dict[int, float]]:
        return process_cpu(self.pid), processes_cpu(self.databases.backend_pids(self.dbname))


async def set_up(server: Server, session: aiohttp.ClientSession, sizes: list[int]) -> None:
    """max(sizes) users, and a room per size joined by the first N of them."""
    started = time.monotonic()
    anonymous = Api(session, server.base)
    by_index: dict[int, Api] = {}

    async def register(index: int) -> None:
        by_index[index] = await anonymous.register(f"member{index}")

    await bounded([functools.partial(register, i) for i in range(max(sizes))], SETUP_CONCURRENCY)
    server.users = [by_index[i] for i in range(max(sizes))]
    for size in sizes:
        owner = server.users[0]
        body = {"preset": "public_chat", "creation_content": {"org.example.size": size}}
        room_id = (await owner.call("POST", "/createRoom", body))["room_id"]
        await bounded(
            [
                functools.partial(u.call, "POST", f"/join/{room_id}", {})
                for u in server.users[1:size]
            ],
            SETUP_CONCURRENCY,
        )
        server.rooms[size] = room_id
        server.sent[size] = server.named[size] = 0
        server.phases[size] = []
    print(
        f"  {server.name}: {len(server.users)} users, rooms of {sizes}"
        f" set up in {time.monotonic() - started:.0f}s"
    )


async def send(server: Server, size: int, index: int) -> None:
    """Message `index` of the room; every MENTION_EVERY-th names a member."""
    named = index % MENTION_EVERY == 0
    body = f"hello member1, message {index}" if named else f"message {index}: hello everyone"
    await server.users[0].send(server.rooms[size], body)
    server.sent[size] += 1
    server.named[size] += named


async def phase(server: Server, size: int, messages: int, profile: Path | None) -> None:
    for _ in range(WARM_UP):  # caches of the room and of its members' rules
        await send(server, size, server.sent[size] + 1)
    latencies: list[float] = []
    spy = None
    if profile is not None and server.name == "ours":
        out = profile / f"ours-{size}-{len(server.phases[size])}.txt"
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"),
            *("record", "--nonblocking", "--gil", "--rate", "400", "--format", "raw"),
            *("-p", str(server.pid), "-o", str(out)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
    cpu_before, db_before = server.cpu()
    for _ in range(messages):
        started = time.monotonic()
        await send(server, size, server.sent[size] + 1)
        latencies.append(time.monotonic() - started)
    cpu_after, db_after = server.cpu()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
    server.phases[size].append(
        (cpu_after - cpu_before, cpu_delta(db_before, db_after), messages, latencies)
    )


def per_message(server: Server, size: int) -> tuple[float, float, float]:
    """(server CPU ms, database CPU ms, p50 latency ms) per message over all rounds."""
    phases = server.phases[size]
    count = sum(p[2] for p in phases)
    cpu = sum(p[0] for p in phases) / count * 1e3
    db = sum(p[1] for p in phases) / count * 1e3
    return cpu, db, statistics.median([x for p in phases for x in p[3]]) * 1e3


async def check_counts(server: Server, size: int) -> str:
    """The unread counts of member1 (named), member2 (not) and of the sender (whose own
    messages never count for them) against what was sent."""
    room_id = server.rooms[size]
    one = json.dumps({"room": {"timeline": {"limit": 1}}})
    problems: list[str] = []
    sent = server.sent[size]
    expected = (
        (server.users[1], (sent, server.named[size])),
        (server.users[2], (sent, 0)),
        (server.users[0], (0, 0)),
    )
    for user, want in expected:
        body = await user.sync(filter=one)
        counts = body["rooms"]["join"][room_id].get("unread_notifications", {})
        got = (counts.get("notification_count", 0), counts.get("highlight_count", 0))
        if got != want:
            problems.append(f"{user.user_id}: {got} != {want}")
    return "counts exact" if not problems else "WRONG COUNTS " + "; ".join(problems)


def report(servers: dict[str, Server], sizes: list[int], checks: dict[str, str]) -> None:
    for size in sizes:
        print(f"room of {size} local members:")
        figures = {name: per_message(s, size) for name, s in servers.items()}
        for name, (cpu, db, p50) in figures.items():
            print(
                f"  {name:8} server CPU {cpu:7.2f} ms/msg   database CPU {db:7.2f} ms/msg"
                f"   send p50 {p50:7.1f} ms   {checks[f'{name}/{size}']}"
            )
        if len(figures) == 2:
            (cpu, db, p50), (s_cpu, s_db, s_p50) = figures["ours"], figures["synapse"]
            print(
                f"  ours/synapse: server CPU 1/{s_cpu / cpu:.1f} (target 1/10)"
                f"   database CPU 1/{s_db / db:.1f} (target 1/4)"
                f"   latency 1/{s_p50 / p50:.1f}"
            )


async def measure(servers: dict[str, Server], args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(set_up(s, session, sizes) for s in servers.values()))
        for size in sizes:
            for round_ in range(args.rounds):
                order = list(servers.values())
                if round_ % 2:
                    order.reverse()
                for server in order:
                    await phase(server, size, args.messages, args.profile)
        checks = {
            f"{name}/{size}": await check_counts(server, size)
            for name, server in servers.items()
            for size in sizes
        }
    report(servers, sizes, checks)


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="bench-big-rooms-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        process = synapse = None
        try:
            if args.only in (None, "ours"):
                database = databases.create()
                # Registration hashes are not what is measured here: make them cheap.
                env = {"HOMESERVER_ARGON2_TIME_COST": "1"}
                process, base = start_ours(workdir, database, env)
                servers["ours"] = Server("ours", base, process.pid, database["dbname"], databases)
            if args.only in (None, "synapse"):
                database = databases.create()
                synapse = Synapse(
                    workdir / "synapse", free_port(), database, bcrypt_rounds=4,
                    venv=args.synapse_venv,
                )  # fmt: skip
                synapse.start()
                assert synapse.process is not None
                servers["synapse"] = Server(
                    "synapse", synapse.base_url, synapse.process.pid, database["dbname"], databases
                )
            await measure(servers, args)
        finally:
            if process is not None:
                stop_process(process)
            if synapse is not None:
                synapse.stop()
            databases.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="300,1000", help="room sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=100, help="per phase")
    parser.add_argument("--rounds", type=int, default=1, help="phases per server and size")
    parser.add_argument("--only", choices=("ours", "synapse"))
    parser.add_argument("--synapse-venv", type=Path, default=INTEROP_VENV)
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    parser.add_argument(
        "--profile", type=Path, help="directory for py-spy samples of ours (skews its CPU)"
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"took {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
