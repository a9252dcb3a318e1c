"""Benchmark /sync: this server against Synapse, one run on one machine.

    python contrib/bench/sync.py [--rooms 200] [--events 50] [--messages 100]
                                 [--polls 2000] [--only ours|synapse] [--admin-db URL]

Both servers run on the same PostgreSQL (a fresh database each, dropped at the
end), one after the other, with rate limits off. For each it measures:

(a) delivery latency: from the start of a send request to the event appearing in
    another user's long-poll (p50, p99 over --messages sends, one at a time);
(b) an initial sync of a user in --rooms rooms of --events events each (median of
    5; each repeat varies a no-op filter, since Synapse caches sync responses);
(c) an incremental sync with nothing new (median of 50);
(d) --polls long-polls held open at once: server memory per held connection (RSS
    delta / polls) and how fast it answers other requests meanwhile (whoami).

Then it prints our figures over Synapse's.
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
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    bounded,
    free_port,
    percentile,
    rss_kib,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import DEFAULT_VENV, Synapse

SETUP_CONCURRENCY = 16


@dataclass
class Figures:
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    initial_sync: float = 0.0
    noop_sync: float = 0.0
    per_poll_kib: float = 0.0
    other_p50: float = 0.0
    other_max: float = 0.0
    notes: list[str] = field(default_factory=list)


async def seed_rooms(user: Api, rooms: int, events: int) -> None:
    """`rooms` rooms of `events` events each (counting the creation's own events)."""

    async def one_room(index: int) -> None:
        # A distinct create event: in room v12 two creations alike in content and
        # millisecond would otherwise name the same room.
        body = {"name": f"Room {index}", "creation_content": {"org.example.bench": index}}
        room_id = (await user.call("POST", "/createRoom", body))["room_id"]
        messages = await user.call("GET", f"/rooms/{room_id}/messages", params={"dir": "b"})
        for i in range(events - len(messages["chunk"])):
            await user.send(room_id, f"message {i} in room {index}")

    await bounded([functools.partial(one_room, i) for i in range(rooms)], SETUP_CONCURRENCY)


async def delivery_latency(sender: Api, receiver: Api, count: int) -> list[float]:
    """Seconds from the start of each send to its event in the receiver's long-poll."""
    room_id = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await receiver.call("POST", f"/join/{room_id}", {})
    token = (await receiver.sync(timeout="0"))["next_batch"]
    arrived: dict[str, float] = {}
    signal = asyncio.Event()
    stop = False

    async def poll() -> None:
        nonlocal token
        while not stop:
            result = await receiver.sync(since=token, timeout="30000")
            now = time.monotonic()
            token = result["next_batch"]
            room = result.get("rooms", {}).get("join", {}).get(room_id, {})
            for event in room.get("timeline", {}).get("events", []):
                body = event.get("content", {}).get("body")
                if isinstance(body, str):
                    arrived.setdefault(body, now)
            signal.set()

    poller = asyncio.create_task(poll())
    latencies = []
    try:
        for i in range(count + 5):
            body = f"latency {i}"
            await asyncio.sleep(0.02)
            started = time.monotonic()
            await sender.send(room_id, body)
            while body not in arrived:
                signal.clear()
                await asyncio.wait_for(signal.wait(), 10)
            if i >= 5:  # warm-up
                latencies.append(arrived[body] - started)
    finally:
        stop = True
        poller.cancel()
    return latencies


async def initial_and_noop(user: Api, repeats: int = 5, noops: int = 50) -> tuple[float, float]:
    timings = []
    token = ""
    for i in range(repeats + 1):
        # The filter changes nothing but defeats Synapse's sync response cache.
        sync_filter = {"account_data": {"not_types": [f"x.bench.{i}.{time.time_ns()}"]}}
        started = time.monotonic()
        result = await user.sync(filter=json.dumps(sync_filter))
        if i:
            timings.append(time.monotonic() - started)
        token = result["next_batch"]
    joined = len(result["rooms"]["join"])
    noop = []
    for _ in range(noops):
        started = time.monotonic()
        result = await user.sync(since=token, timeout="0")
        noop.append(time.monotonic() - started)
        token = result["next_batch"]
    print(f"    initial sync saw {joined} joined rooms")
    return statistics.median(timings), statistics.median(noop)


async def held_polls(user: Api, pid: int, polls: int) -> tuple[float, float, float]:
    """Hold `polls` long-polls open; (KiB per poll, p50 and max latency of whoami)."""
    token = (await user.sync(timeout="0"))["next_batch"]
    for _ in range(5):
        await user.sync(since=token, timeout="0")
        await user.call("GET", "/account/whoami")
    before = rss_kib(pid)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as held_session:
        held = Api(held_session, user.server)
        held.headers = user.headers
        # Distinct timeouts: Synapse would otherwise serve identical requests as one.
        tasks = [
            asyncio.create_task(held.sync(since=token, timeout=str(300_000 + i)))
            for i in range(polls)
        ]
        await asyncio.sleep(max(5.0, polls / 200))
        failed = [t for t in tasks if t.done()]
        if failed:
            raise RuntimeError(f"{len(failed)} long-polls ended early: {failed[0]}")
        after = rss_kib(pid)
        latencies = []
        for _ in range(30):
            started = time.monotonic()
            await user.call("GET", "/account/whoami")
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (after - before) / polls, statistics.median(latencies), max(latencies)


async def measure(name: str, base: str, pid: int, args: argparse.Namespace) -> Figures:
    figures = Figures()
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        anonymous = Api(session, base)
        reader = await anonymous.register("reader")
        sender = await anonymous.register("sender")
        receiver = await anonymous.register("receiver")
        poller = await anonymous.register("poller")
        started = time.monotonic()
        await seed_rooms(reader, args.rooms, args.events)
        print(f"  {name}: seeded {args.rooms} rooms in {time.monotonic() - started:.0f}s")
        latencies = await delivery_latency(sender, receiver, args.messages)
        figures.latency_p50 = statistics.median(latencies)
        figures.latency_p99 = percentile(latencies, 0.99)
        figures.initial_sync, figures.noop_sync = await initial_and_noop(reader)
        await poller.call("POST", "/createRoom", {"name": "polls"})
        per_poll, figures.other_p50, figures.other_max = await held_polls(poller, pid, args.polls)
        figures.per_poll_kib = per_poll
    print(
        f"  {name}: latency p50 {figures.latency_p50 * 1000:.1f} ms"
        f" p99 {figures.latency_p99 * 1000:.1f} ms;"
        f" initial sync {figures.initial_sync * 1000:.0f} ms;"
        f" no-op sync {figures.noop_sync * 1000:.2f} ms;"
        f" {figures.per_poll_kib:.1f} KiB per held poll;"
        f" whoami meanwhile p50 {figures.other_p50 * 1000:.1f} ms"
        f" max {figures.other_max * 1000:.1f} ms"
    )
    return figures


def report(ours: Figures, synapse: Figures) -> None:
    def ratio(theirs: float, mine: float) -> str:
        return f"{theirs / mine:.1f}x" if mine > 0 else "n/a"

    print("\nratios (Synapse / ours; higher is better for us):")
    print(
        f"  (a) delivery latency p50: {ratio(synapse.latency_p50, ours.latency_p50)}"
        f"  (target >= 3x), p99: {ratio(synapse.latency_p99, ours.latency_p99)}"
    )
    print(f"  (b) initial sync: {ratio(synapse.initial_sync, ours.initial_sync)} (target >= 3x)")
    print(
        f"  (c) no-op incremental sync: {ratio(synapse.noop_sync, ours.noop_sync)} (target >= 5x)"
    )
    print(
        f"  (d) memory per held long-poll: ours {ours.per_poll_kib:.1f} KiB (target < 20),"
        f" Synapse {synapse.per_poll_kib:.1f} KiB; whoami while held: ours max"
        f" {ours.other_max * 1000:.1f} ms (target < 50), Synapse max"
        f" {synapse.other_max * 1000:.1f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        try:
            if args.only in (None, "ours"):
                process, base = start_ours(workdir, databases.create())
                try:
                    results["ours"] = await measure("ours", base, process.pid, args)
                finally:
                    stop_process(process)
            if args.only in (None, "synapse"):
                synapse = Synapse(
                    workdir / "synapse",
                    free_port(),
                    databases.create(),
                    bcrypt_rounds=4,
                    venv=args.synapse_venv,
                )
                synapse.start()
                try:
                    assert synapse.process is not None
                    results["synapse"] = await measure(
                        "synapse", synapse.base_url, synapse.process.pid, args
                    )
                finally:
                    synapse.stop()
        finally:
            databases.drop_all()
    if len(results) == 2:
        report(results["ours"], results["synapse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--only", choices=("ours", "synapse"))
    parser.add_argument("--synapse-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--admin-db",
        default=DEFAULT_ADMIN_DB,
        help="PostgreSQL URL with the right to create databases",
    )
    print(f"cores: {os.cpu_count()}")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
