"""Benchmark the cluster: 1, 2 and 3 processes behind nginx on one PostgreSQL.

    python contrib/bench/cluster.py [--seconds 15] [--rooms 10] [--sizes 1,2,3]
                                    [--admin-db URL]

For each size, a fresh database, nginx (tests/cluster/harness.py) and that many
`homeserver run` processes. --rooms rooms each have a sender and a receiver; the
senders send as fast as their answers come back (through nginx, round robin over the
processes) for --seconds, while each receiver long-polls /sync through nginx. It
prints:

- sends per second (acknowledged);
- delivery latency, p50 and p99: from a send being issued to its message arriving in
  the receiver's sync;
- CPU per message: each homeserver process, the PostgreSQL backends serving its
  database, and nginx (user+system time from /proc), in milliseconds.

Synapse is not run beside it: its worker mode needs Redis, which this deployment
does without (single-process figures against Synapse: contrib/bench/rooms.py). On a
machine of few cores the client, nginx, the processes and PostgreSQL share them: say
so when quoting the numbers, and read the PostgreSQL column for where the database
becomes the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    cpu_delta,
    percentile,
    processes_cpu,
)
from tests.cluster.harness import Cluster

SETTINGS = {
    "rate_limits": {"enabled": False},
    "log_level": "warning",
}


@dataclass
class Result:
    size: int
    sends: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)


async def _receive(
    user: Api, room_id: str, sent_at: dict[str, float], result: Result, stop: asyncio.Event
) -> None:
    since = (await user.sync(timeout="0"))["next_batch"]
    while not stop.is_set():
        try:
            data = await user.sync(since=since, timeout="5000")
        except (aiohttp.ClientError, RuntimeError):
            continue
        now = time.monotonic()
        since = data["next_batch"]
        room = data.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("timeline", {}).get("events", []):
            issued = sent_at.pop(event["content"].get("body", ""), None)
            if issued is not None:
                result.latencies.append(now - issued)


async def _send(
    user: Api, room_id: str, sent_at: dict[str, float], result: Result, stop: asyncio.Event
) -> None:
    n = 0
    while not stop.is_set():
        body = f"{user.user_id} {n}"
        sent_at[body] = time.monotonic()
        await user.send(room_id, body)
        result.sends += 1
        n += 1


def _pids(cluster: Cluster, databases: Databases, name: str) -> dict[str, list[int]]:
    return {
        **{
            f"hs{i}": [server.process.pid]
            for i, server in enumerate(cluster.servers)
            if server is not None
        },
        "postgres": databases.backend_pids(name),
        "nginx": [cluster.nginx.process.pid, *_children(cluster.nginx.process.pid)],
    }


def _children(pid: int) -> list[int]:
    """nginx's worker processes."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


async def measure(size: int, args: argparse.Namespace, databases: Databases) -> Result:
    database = databases.create()
    with tempfile.TemporaryDirectory(prefix="hs-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp), make_conninfo(**database), size, **SETTINGS)
        result = Result(size)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                anonymous = Api(session, cluster.url)
                tag = time.monotonic_ns()
                pairs = []
                for r in range(args.rooms):
                    sender = await anonymous.register(f"s{r}-{tag}")
                    receiver = await anonymous.register(f"r{r}-{tag}")
                    room_id = (await sender.call("POST", "/createRoom", {}))["room_id"]
                    await sender.call(
                        "POST", f"/rooms/{room_id}/invite", {"user_id": receiver.user_id}
                    )
                    await receiver.call("POST", f"/join/{room_id}", {})
                    pairs.append((sender, receiver, room_id))
                stop = asyncio.Event()
                sent_at: dict[str, float] = {}
                receivers = [
                    asyncio.create_task(_receive(rcv, room, sent_at, result, stop))
                    for _, rcv, room in pairs
                ]
                await asyncio.sleep(1.0)  # every receiver is waiting
                pids = _pids(cluster, databases, database["dbname"])
                before = {k: processes_cpu(v) for k, v in pids.items()}
                started = time.monotonic()
                senders = [
                    asyncio.create_task(_send(snd, room, sent_at, result, stop))
                    for snd, _, room in pairs
                ]
                await asyncio.sleep(args.seconds)
                stop.set()
                await asyncio.gather(*senders)
                result.seconds = time.monotonic() - started
                after = {k: processes_cpu(pids[k]) for k in pids}
                await asyncio.wait_for(asyncio.gather(*receivers), 30)
            for key in pids:
                spent = cpu_delta(before[key], after[key])
                result.cpu_ms[key] = 1000 * spent / max(1, result.sends)
        finally:
            cluster.stop()
    return result


def report(results: list[Result]) -> None:
    base = results[0].sends / results[0].seconds
    print(
        f"{'processes':>9} {'sends/s':>8} {'x1':>5} {'p50 ms':>7} {'p99 ms':>7}"
        "  CPU ms per message (each process; postgres; nginx)"
    )
    for r in results:
        rate = r.sends / r.seconds
        each = " ".join(f"{r.cpu_ms[k]:.2f}" for k in sorted(r.cpu_ms) if k.startswith("hs"))
        print(
            f"{r.size:>9} {rate:>8.0f} {rate / base:>5.2f}"
            f" {1000 * percentile(r.latencies, 0.5):>7.1f}"
            f" {1000 * percentile(r.latencies, 0.99):>7.1f}"
            f"  [{each}]; {r.cpu_ms['postgres']:.2f}; {r.cpu_ms['nginx']:.2f}"
        )


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    try:
        results = [await measure(int(size), args, databases) for size in args.sizes.split(",")]
    finally:
        databases.drop_all()
    report(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--sizes", default="1,2,3")
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
