"""Benchmark federation: how fast a message sent on one server reaches a user of another.

    python contrib/bench/federation.py [--messages 100] [--stream 1000]
                                       [--pairs ours-ours,ours-synapse,synapse-ours,...]

Four servers on loopback, each on a fresh PostgreSQL database (dropped at the end):
two of ours and two Synapses, every one named "localhost:PORT" and federating over
TLS with a self-signed certificate (verification off on every side), rate limits
off. For each pair (sender's server - receiver's server) a user of the first creates
a public room and a user of the second joins it over federation; then:

(a) delivery latency: from the start of a send request on the sender's server to
    the event appearing in the receiver's long-poll /sync on the other server
    (p50, p99 over --messages sends, one at a time, after a short warm-up);
(b) throughput: --stream messages sent at once (16 in flight) on the sender's
    server; messages per second until the last has reached the receiver's /sync
    (or, for any the receiving server placed as history instead, its /messages).

It prints one line per pair, and ours-to-ours p50 over Synapse-to-Synapse p50.
With --join-members N it measures instead (c) joining a room of N members held by a
Synapse, ours against a Synapse (`federation_join.py`): time until the joining user
can send, until the whole member list is known, and peak memory. --join-fill ours
builds that room on a fifth server, of ours, which the Synapse then joins over
federation (`federation_fill.py`): much faster than filling it inside Synapse.
Synapse comes from the benchmark virtualenv (`contrib/bench/synapse.py`), run by the
interop harness's `SynapseInstance` with its database switched to PostgreSQL.
A busy room with hundreds of servers (fan-out, inbound rate) is `busy_room.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.federation_fill import asked, federation_requests, fill_ours, synapse_holds
from contrib.bench.federation_join import big_room, measure_join
from contrib.bench.federation_join import line as join_line
from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    bounded,
    free_port,
    percentile,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import DEFAULT_VENV
from contrib.synapse_harness import SynapseInstance, ensure_synapse, make_self_signed_cert

WARM_UP = 5
STREAM_CONCURRENCY = 16
# Whole timelines in each /sync, so that no message of a burst hides behind a gap.
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 2000}}, "presence": {"types": []}})


@dataclass
class Server:
    kind: str  # "ours" or "synapse"
    name: str  # server name, "localhost:PORT"
    client_url: str
    stop: Callable[[], None]
    pid: int


class PostgresSynapse(SynapseInstance):
    """The interop harness's Synapse (TLS federation listener), on PostgreSQL like
    ours rather than SQLite, so that both sides pay for durable commits alike."""

    def __init__(self, workdir: Path, database: dict[str, Any]) -> None:
        super().__init__(workdir, free_port(), free_port())
        self.database = database

    def write_config(self) -> Path:
        path = super().write_config()
        config = yaml.safe_load(path.read_text())
        config["database"] = {"name": "psycopg2", "args": {**self.database, "cp_max": 10}}
        config["log_config"] = str(self._quiet_log())
        path.write_text(yaml.safe_dump(config))
        return path

    def _quiet_log(self) -> Path:
        path = self.workdir / "log-warning.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "filename": str(self.workdir / "homeserver.log"),
                        }
                    },
                    "root": {"level": "WARNING", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        return path


def start_our_server(
    workdir: Path, database: dict[str, Any], extra_env: dict[str, str] | None = None
) -> Server:
    tls_port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = make_self_signed_cert(workdir)
    name = f"localhost:{tls_port}"
    process, base = start_ours(
        workdir,
        database,
        {
            "HOMESERVER_SERVER_NAME": name,
            "HOMESERVER_TLS_PORT": str(tls_port),
            "HOMESERVER_TLS_CERT": str(cert),
            "HOMESERVER_TLS_KEY": str(key),
            "HOMESERVER_FEDERATION_VERIFY_TLS": "false",
            "HOMESERVER_FEDERATION_IP_RANGE_WHITELIST": "127.0.0.0/8,::1/128",
            "HOMESERVER_PRESENCE_ENABLED": "false",
            **(extra_env or {}),
        },
    )
    return Server("ours", name, base, functools.partial(stop_process, process), process.pid)


def start_synapse(workdir: Path, database: dict[str, Any]) -> Server:
    instance = PostgresSynapse(workdir, database)
    python = DEFAULT_VENV / "bin" / "python"
    # Without the benchmark virtualenv, the interop tests' one (installed on first use).
    instance.start(python if python.exists() else ensure_synapse())
    assert instance._process is not None
    pid = instance._process.pid
    return Server("synapse", instance.server_name, instance.client_url, instance.stop, pid)


async def room_across(sender: Api, receiver: Api, sender_server: str) -> tuple[str, str]:
    """A public room of `sender` that `receiver` joined over federation; (room id, the
    receiver's sync token once the join is in)."""
    created = await sender.call("POST", "/createRoom", {"preset": "public_chat"})
    room_id = created["room_id"]
    await receiver.call("POST", f"/join/{room_id}", {}, params={"server_name": sender_server})
    for _ in range(200):  # until the sender's server has the join too
        members = await sender.call("GET", f"/rooms/{room_id}/joined_members")
        if receiver.user_id in members.get("joined", {}):
            break
        await asyncio.sleep(0.05)
    token = (await receiver.sync(timeout="0", filter=SYNC_FILTER))["next_batch"]
    return room_id, token


class Arrivals:
    """The receiver's long-poll, noting when each message body first appears."""

    def __init__(self, receiver: Api, room_id: str, token: str) -> None:
        self.receiver = receiver
        self.room_id = room_id
        self.token = token
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            result = await self.receiver.sync(since=self.token, timeout="30000", filter=SYNC_FILTER)
            now = time.monotonic()
            self.token = result["next_batch"]
            room = result.get("rooms", {}).get("join", {}).get(self.room_id, {})
            for event in room.get("timeline", {}).get("events", []):
                body = event.get("content", {}).get("body")
                if isinstance(body, str):
                    self.seen.setdefault(body, now)
            self.changed.set()

    async def wait_for(self, done: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not done():
            self.changed.clear()
            if self._task.done():
                self._task.result()  # the poll failed: raise why
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))

    def _more_than(self, count: int) -> bool:
        return len(self.seen) > count

    async def settle(self, bodies: list[str], quiet: float) -> list[str]:
        """Wait until all `bodies` arrived, or none did for `quiet` seconds; the missing."""
        while True:
            missing = [b for b in bodies if b not in self.seen]
            if not missing:
                return []
            try:
                await self.wait_for(functools.partial(self._more_than, len(self.seen)), quiet)
            except TimeoutError:
                return missing

    def close(self) -> None:
        self._task.cancel()


async def history_has(user: Api, room_id: str, bodies: set[str], within: float) -> None:
    """Until `bodies` are all in the room's /messages history. A server that receives a
    burst out of order may place some events as history rather than in the sync stream
    (Synapse does, having fetched them to fill a gap): they count as delivered once
    readable."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found: set[str] = set()
        params = {"dir": "b", "limit": "1000"}
        for _ in range(10):
            page = await user.call("GET", f"/rooms/{room_id}/messages", params=params)
            found.update(e.get("content", {}).get("body") for e in page["chunk"])
            if bodies <= found or "end" not in page:
                break
            params["from"] = page["end"]
        if bodies <= found:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{len(bodies)} messages never became readable")


async def measure_pair(
    session: aiohttp.ClientSession, sender_server: Server, receiver_server: Server, args: Any
) -> dict[str, float]:
    tag = f"{sender_server.kind}{time.monotonic_ns()}"
    sender = await Api(session, sender_server.client_url).register(f"s{tag}")
    receiver = await Api(session, receiver_server.client_url).register(f"r{tag}")
    room_id, token = await room_across(sender, receiver, sender_server.name)
    arrivals = Arrivals(receiver, room_id, token)
    try:
        latencies = []
        for i in range(args.messages + WARM_UP):
            body = f"latency {i}"
            await asyncio.sleep(0.02)  # the long-poll is waiting again
            started = time.monotonic()
            await sender.send(room_id, body)
            await arrivals.wait_for(functools.partial(arrivals.seen.__contains__, body), 30)
            if i >= WARM_UP:
                latencies.append(arrivals.seen[body] - started)

        bodies = [f"stream {i}" for i in range(args.stream)]
        started = time.monotonic()
        sends: list[Callable[[], Awaitable[None]]] = [
            functools.partial(sender.send, room_id, b) for b in bodies
        ]
        await bounded(sends, STREAM_CONCURRENCY)
        sent = time.monotonic() - started
        missed = await arrivals.settle(bodies, quiet=5.0)
        if missed:  # placed outside the sync stream: wait until /messages has them all
            await history_has(receiver, room_id, set(missed), within=120)
            last = time.monotonic()
        else:
            last = max(arrivals.seen[b] for b in bodies)
        elapsed = last - started
    finally:
        arrivals.close()
    return {
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "send_per_s": args.stream / sent,
        "delivered_per_s": args.stream / elapsed,
        "not_in_sync": len(missed),
    }


async def run_join(args: Any) -> dict[str, dict[str, float]]:
    """(c) Joining a room of --join-members members held by a Synapse: ours and a
    second Synapse join it in turn (`federation_join.py`)."""
    databases = Databases(args.admin_db)
    started: list[Server] = []
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-federation-join-") as tmp:
        try:
            for kind, start in (("synapse", start_synapse), ("ours", start_our_server)):
                started.append(start(Path(tmp) / f"{kind}0", databases.create()))
            started.append(start_synapse(Path(tmp) / "synapse1", databases.create()))
            resident, ours, synapse = started
            timeout = aiohttp.ClientTimeout(total=1800)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                if args.join_fill == "ours":
                    room_id, members, requests = await _filled_by_ours(
                        s, Path(tmp), databases, started, args
                    )
                else:
                    room_id, members, filled = await big_room(
                        s, resident.client_url, resident.name, args.join_members, args.join_state
                    )
                    print(f"room of {len(members)} members made in {filled:.0f} s", flush=True)
                    requests = None
                for joiner in (ours, synapse):
                    label = f"{joiner.kind} joins"
                    before = await requests() if requests else {}
                    results[label] = await measure_join(
                        s, joiner.client_url, joiner.pid, resident.name, room_id, len(members)
                    )
                    print(label, join_line(results[label]), flush=True)
                    if requests:
                        print(f"  the filler answered: {asked(before, await requests())}")
        finally:
            for server in started:
                server.stop()
            databases.drop_all()
    return results


async def _filled_by_ours(
    session: aiohttp.ClientSession,
    tmp: Path,
    databases: Databases,
    started: list[Server],
    args: Any,
) -> tuple[str, set[str], Callable[[], Awaitable[dict[str, int]]]]:
    """The room made on a filler of ours (started here, appended to `started`) and
    then held by the resident Synapse (`started[0]`) through federation; (room id, its
    members, a snapshot of the federation requests the filler answered)."""
    metrics_port = free_port()
    filler = start_our_server(
        tmp / "filler", databases.create(), {"HOMESERVER_METRICS_PORT": str(metrics_port)}
    )
    started.append(filler)
    resident = started[0]
    begun = time.monotonic()
    room_id, members, state_events = await fill_ours(
        session, filler.client_url, filler.name, args.join_members, args.join_state
    )
    print(f"filler: room of {len(members)} members, {state_events} state events", flush=True)
    await synapse_holds(session, resident.client_url, room_id, filler.name, state_events)
    print(f"room made and held by the resident in {time.monotonic() - begun:.0f} s", flush=True)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    return (
        room_id,
        {*members, f"@resident:{resident.name}"},
        functools.partial(federation_requests, session, metrics_url),
    )


async def run(args: Any) -> dict[str, dict[str, float]]:
    pairs = [p.split("-") for p in args.pairs.split(",")]
    wanted = {kind for pair in pairs for kind in pair}
    databases = Databases(args.admin_db)
    servers: dict[str, list[Server]] = {"ours": [], "synapse": []}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        try:
            for kind, start in (("ours", start_our_server), ("synapse", start_synapse)):
                if kind in wanted:
                    for i in range(2):
                        workdir = Path(tmp) / f"{kind}{i}"
                        servers[kind].append(start(workdir, databases.create()))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
                for first, second in pairs:
                    label = f"{first}->{second}"
                    sender = servers[first][0]
                    receiver = servers[second][1 if first == second else 0]
                    results[label] = await measure_pair(s, sender, receiver, args)
                    print(label, _line(results[label]), flush=True)
        finally:
            for group in servers.values():
                for server in group:
                    server.stop()
            databases.drop_all()
    return results


def _line(figures: dict[str, float]) -> str:
    return (
        f"latency p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms;"
        f" stream: sent {figures['send_per_s']:.0f}/s,"
        f" delivered {figures['delivered_per_s']:.0f}/s"
        f" ({figures['not_in_sync']:.0f} only in /messages, not /sync)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--stream", type=int, default=1000)
    parser.add_argument("--pairs", default="ours-ours,ours-synapse,synapse-ours,synapse-synapse")
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--join-members", type=int, default=0, help="instead: join a Synapse room this big"
    )
    parser.add_argument(
        "--join-state", type=int, default=0, help="with --join-members: this many more state events"
    )
    parser.add_argument(
        "--join-fill",
        choices=("synapse", "ours"),
        default="synapse",
        help="with --join-members: who fills the room (ours: a server of ours, then the"
        " Synapse joins it over federation)",
    )
    args = parser.parse_args()
    # A run in the background ignores SIGINT: let SIGTERM stop it as Ctrl-C would, so
    # that its servers are stopped and its databases dropped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.join_members:
        results = asyncio.run(run_join(args))
        ours, synapse = results["ours joins"], results["synapse joins"]
        print(f"ours / synapse time to send = {ours['send_s'] / synapse['send_s']:.2f}")
    else:
        results = asyncio.run(run(args))
    if "ours->ours" in results and "synapse->synapse" in results:
        ratio = results["ours->ours"]["p50_ms"] / results["synapse->synapse"]["p50_ms"]
        print(f"ours->ours p50 / synapse->synapse p50 = {ratio:.2f} (target <= 0.5)")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
