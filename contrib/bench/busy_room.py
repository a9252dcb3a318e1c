"""Benchmark a busy room with many servers: fan-out to hundreds of destinations, and how
fast a stream of incoming transactions is taken in; ours and Synapse side by side.

    python contrib/bench/busy_room.py [--servers 200] [--messages 10] [--slow-delay 5]
                                      [--inbound 20] [--kinds ours,synapse] [--rounds 2]

For each kind of server (one of ours, one Synapse, on fresh PostgreSQL databases, TLS
federation with verification off, as in `federation.py`) a local user creates a public
room, and `--servers` simulated servers (`fake_servers.py`, one process, loopback TLS)
join it. Then:

(a) fan-out: the local user sends `--messages` messages, one at a time; for each, the
    delay from the start of the send request to its arrival at every simulated server
    (p50 and p99 over all healthy destinations and messages). Done with every server
    healthy, and with one of them slow (answering /send after `--slow-delay` s), the
    two alternated `--rounds` times: the slow one must not move the others' p50.
(b) inbound: one simulated server sends `--inbound` transactions of 50 messages each,
    one transaction at a time as a real server does; PDUs per second as the
    transactions were answered, and until the last is readable by the local user
    (0 if it never is within 30 s). Synapse answers /send once the PDUs are staged, not
    processed, and past 100 staged events in a room drops all but the newest and asks
    the origin for the rest (/get_missing_events, then /state_ids, which the simulated
    servers do not serve): so its "answered" rate is a staging rate, and its readable
    one the real intake.

It prints a line per measurement and the ratios ours / Synapse.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.fake_servers import FakeNetwork, FakeServer
from contrib.bench.federation import PostgresSynapse, Server, start_our_server
from contrib.bench.harness import DEFAULT_ADMIN_DB, Api, Databases, percentile
from contrib.synapse_harness import make_self_signed_cert, venv_dir

PDUS_PER_TRANSACTION = 50


async def quiet(network: FakeNetwork, seconds: float, within: float = 600) -> None:
    """Until no simulated server got a transaction for `seconds` (setup traffic done)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = sum(s.transactions for s in network.servers)
        await asyncio.sleep(seconds)
        if sum(s.transactions for s in network.servers) == before:
            return


async def fan_out(
    user: Api, room_id: str, network: FakeNetwork, slow: FakeServer | None, args: Any
) -> list[float]:
    """Send `args.messages` messages; the delays (s) to each healthy destination."""
    delays: list[float] = []
    healthy = [s for s in network.servers if s is not slow]
    for i in range(args.messages):
        body = f"fan {time.monotonic_ns()} {i}"
        started = time.monotonic()
        await user.send(room_id, body)
        deadline = started + 60
        while any(body not in s.arrivals for s in healthy):
            if time.monotonic() > deadline:
                missing = sum(body not in s.arrivals for s in healthy)
                raise RuntimeError(f"{missing} destinations never got {body!r}")
            await asyncio.sleep(0.005)
        delays.extend(s.arrivals[body] - started for s in healthy)
    return delays


async def inbound(
    user: Api, room_id: str, network: FakeNetwork, target: str, version: str, args: Any
) -> tuple[float, float]:
    """PDUs per second taken in from one simulated server's stream of transactions: as
    the transactions were answered, and until the last was readable (0 if never)."""
    sender = network.servers[0]
    total = args.inbound * PDUS_PER_TRANSACTION
    events = network.messages(sender, room_id, version, total)
    started = time.monotonic()
    for n in range(args.inbound):
        chunk = events[n * PDUS_PER_TRANSACTION : (n + 1) * PDUS_PER_TRANSACTION]
        txn = f"in{time.monotonic_ns()}"
        body = {
            "origin": sender.name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [e.pdu for e in chunk],
        }
        path = f"/_matrix/federation/v1/send/{txn}"
        answer = await network.request(sender, "PUT", target, path, body)
        errors = [r["error"] for r in answer.get("pdus", {}).values() if r.get("error")]
        if errors:
            print(f"{len(errors)} PDUs refused, such as: {errors[0]}", flush=True)
    acked = total / (time.monotonic() - started)
    last = events[-1].event_id
    for _ in range(3000):
        try:
            await user.call("GET", f"/rooms/{room_id}/event/{last}")
            return acked, total / (time.monotonic() - started)
        except RuntimeError:
            await asyncio.sleep(0.01)
    return acked, 0.0  # the last one never became readable to the local user


async def measure(server: Server, network: FakeNetwork, args: Any) -> dict[str, float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        user = await Api(session, server.client_url).register(f"busy{time.monotonic_ns()}")
        created = await user.call("POST", "/createRoom", {"preset": "public_chat"})
        room_id = created["room_id"]
        target = server.name
        started = time.monotonic()
        for fake in network.servers:
            await network.join(fake, target, room_id)
        joined_s = time.monotonic() - started
        await quiet(network, 2.0)
        print(f"{server.kind}: {len(network.servers)} servers joined in {joined_s:.1f} s")
        version = (await user.call("GET", f"/rooms/{room_id}/state/m.room.create"))["room_version"]
        slow = network.servers[-1]
        figures: dict[str, list[float]] = {"healthy": [], "one_slow": []}
        for _ in range(args.rounds):
            for label in ("healthy", "one_slow"):
                slow.delay = args.slow_delay if label == "one_slow" else 0.0
                delays = await fan_out(user, room_id, network, slow, args)
                figures[label].extend(delays)
                print(
                    f"{server.kind} fan-out {label}: p50 {percentile(delays, 0.5) * 1000:.0f} ms,"
                    f" p99 {percentile(delays, 0.99) * 1000:.0f} ms",
                    flush=True,
                )
        slow.delay = 0.0
        await quiet(network, 1.0, within=120)
        rates = [await inbound(user, room_id, network, target, version, args) for _ in range(2)]
        for acked, readable in rates:
            print(
                f"{server.kind} inbound: {acked:.0f} PDUs/s answered,"
                f" {readable:.0f} PDUs/s readable",
                flush=True,
            )
    return {
        "join_s": joined_s,
        "healthy_p50_ms": percentile(figures["healthy"], 0.5) * 1000,
        "healthy_p99_ms": percentile(figures["healthy"], 0.99) * 1000,
        "slow_p50_ms": percentile(figures["one_slow"], 0.5) * 1000,
        "slow_p99_ms": percentile(figures["one_slow"], 0.99) * 1000,
        "inbound_pdus_per_s": max(r[0] for r in rates),
        "inbound_readable_per_s": max(r[1] for r in rates),
    }


def start_synapse(workdir: Path, database: dict[str, Any], venv: Path) -> Server:
    instance = PostgresSynapse(workdir, database)
    instance.start(venv / "bin" / "python")
    assert instance._process is not None
    pid = instance._process.pid
    return Server("synapse", instance.server_name, instance.client_url, instance.stop, pid)


async def run(args: Any) -> dict[str, dict[str, float]]:
    databases = Databases(args.admin_db)
    results: dict[str, dict[str, float]] = {}
    starts = {
        "ours": start_our_server,
        "synapse": functools.partial(start_synapse, venv=Path(args.synapse_venv)),
    }
    with tempfile.TemporaryDirectory(prefix="bench-busy-room-") as tmp:
        cert, key = make_self_signed_cert(Path(tmp), "127.0.0.1")
        try:
            for kind in args.kinds.split(","):
                server = starts[kind](Path(tmp) / kind, databases.create())
                network = FakeNetwork(args.servers, cert, key)
                try:
                    await network.start()
                    results[kind] = await measure(server, network, args)
                finally:
                    await network.close()
                    server.stop()
        finally:
            databases.drop_all()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--slow-delay", type=float, default=5.0)
    parser.add_argument("--inbound", type=int, default=20, help="transactions of 50 PDUs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", default="ours,synapse")
    parser.add_argument("--synapse-venv", default=str(venv_dir()), help="Synapse's virtualenv")
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for kind, figures in results.items():
        print(kind, {k: round(v, 1) for k, v in figures.items()})
    if "ours" in results and "synapse" in results:
        for key in ("healthy_p50_ms", "slow_p50_ms", "inbound_pdus_per_s"):
            ratio = results["ours"][key] / results["synapse"][key]
            print(f"ours / synapse {key} = {ratio:.2f}")


if __name__ == "__main__":
    main()
