"""Benchmark password logins per second: this server against Synapse, one run.

    python contrib/bench/logins.py [--seconds S] [--rounds R] [--concurrency C] [--users N]
                                   [--bcrypt-rounds R] [--admin-db URL]

A login costs one password hash check, which dominates everything else, so the
two servers first get hashes of equal CPU cost: Synapse keeps its bcrypt rounds
(12 by default) and our argon2id pass count (`argon2_time_cost`) is picked so that
one check costs the nearest CPU time; both costs are printed. Both servers run on
the same PostgreSQL (a fresh database each, dropped afterwards), one after the
other, with rate limits off. Each registers N users, then C concurrent clients
log in (m.login.password, a new device each time); the servers take turns in short
windows (S seconds each in total) so that load from elsewhere on the machine hits
both alike. Prints logins/s, median latency, server CPU per login (the steadier
figure on a busy machine), and the ratio ours/Synapse.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    PASSWORD,
    Databases,
    free_port,
    process_cpu,
)
from contrib.bench.harness import start_ours as start_server
from contrib.bench.synapse import DEFAULT_VENV, Synapse, bcrypt_cost
from homeserver.services.accounts.passwords import DEFAULT_MEMORY_COST, hash_password


@dataclass
class Result:
    logins: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.logins / self.seconds

    def line(self, name: str) -> str:
        median = statistics.median(self.latencies) * 1000 if self.latencies else float("nan")
        cpu = self.cpu_seconds / self.logins * 1000 if self.logins else float("nan")
        return (
            f"{name:8} {self.per_second:8.1f} logins/s  median {median:6.1f} ms"
            f"  server CPU {cpu:6.1f} ms/login  ({self.logins} ok, {self.errors} errors)"
        )


def argon2_cost(time_cost: int, samples: int = 7) -> float:
    """CPU seconds of one argon2id check with our parameters and `time_cost` passes
    (the least of several: other load on the machine only ever adds)."""
    from argon2 import PasswordHasher

    hashed = hash_password(PASSWORD, time_cost)
    hasher = PasswordHasher(time_cost=time_cost)
    costs = []
    for _ in range(samples):
        start = time.process_time()
        hasher.verify(hashed, PASSWORD)
        costs.append(time.process_time() - start)
    return min(costs)


def matching_time_cost(target: float) -> tuple[int, float]:
    """The argon2 pass count whose check costs nearest to `target` CPU seconds."""
    best = (1, argon2_cost(1))
    for passes in range(2, 40):
        cost = argon2_cost(passes)
        if abs(cost - target) < abs(best[1] - target):
            best = (passes, cost)
        if cost > target:
            break
    return best


async def register(session: aiohttp.ClientSession, base: str, username: str) -> None:
    body = {"username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    async with session.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"registering {username}: {resp.status} {await resp.text()}")


async def login_window(
    session: aiohttp.ClientSession,
    base: str,
    pid: int,
    names: list[str],
    seconds: float,
    concurrency: int,
) -> Result:
    """C clients logging in as fast as answers come, for `seconds`."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        n = index
        while time.monotonic() < deadline:
            body = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": names[n % len(names)]},
                "password": PASSWORD,
            }
            n += concurrency
            start = time.monotonic()
            async with session.post(f"{base}/_matrix/client/v3/login", json=body) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append(time.monotonic() - start)
                else:
                    errors += 1

    cpu_before = process_cpu(pid)
    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Result(
        len(latencies), errors, time.monotonic() - started, latencies, process_cpu(pid) - cpu_before
    )


def total(results: list[Result]) -> Result:
    return Result(
        sum(r.logins for r in results),
        sum(r.errors for r in results),
        sum(r.seconds for r in results),
        [latency for r in results for latency in r.latencies],
        sum(r.cpu_seconds for r in results),
    )


async def compare(servers: dict[str, tuple[str, int]], args: argparse.Namespace) -> None:
    """Alternate short windows between the servers, so that load from elsewhere on
    the machine falls on both alike; print the totals and the ratio."""
    names = [f"bench{i}" for i in range(args.users)]
    results: dict[str, list[Result]] = {name: [] for name in servers}
    async with aiohttp.ClientSession() as session:
        for base, _ in servers.values():
            await asyncio.gather(*(register(session, base, name) for name in names))
        for _ in range(args.rounds):
            for name, (base, pid) in servers.items():
                results[name].append(
                    await login_window(
                        session, base, pid, names, args.seconds / args.rounds, args.concurrency
                    )
                )
    totals = {name: total(found) for name, found in results.items()}
    for name, result in totals.items():
        print(result.line(name))
    ratio = totals["ours"].per_second / totals["synapse"].per_second
    print(f"ratio ours/synapse: {ratio:.2f}x logins per second")


def start_ours(
    workdir: Path, database: dict[str, Any], time_cost: int
) -> tuple[subprocess.Popen[bytes], str]:
    return start_server(workdir, database, {"HOMESERVER_ARGON2_TIME_COST": str(time_cost)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="per server, in total")
    parser.add_argument("--rounds", type=int, default=8, help="alternating windows per server")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--synapse-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--admin-db",
        default=DEFAULT_ADMIN_DB,
        help="PostgreSQL URL with the right to create databases",
    )
    args = parser.parse_args()

    target = bcrypt_cost(args.synapse_venv, args.bcrypt_rounds)
    time_cost, ours_cost = matching_time_cost(target)
    print(f"cores: {os.cpu_count()}")
    print(
        f"per-hash CPU: Synapse bcrypt rounds={args.bcrypt_rounds}: {target * 1000:.0f} ms;"
        f" ours argon2id t={time_cost} m={DEFAULT_MEMORY_COST // 1024}MiB p=4:"
        f" {ours_cost * 1000:.0f} ms"
    )
    databases = Databases(args.admin_db)
    with tempfile.TemporaryDirectory(prefix="bench-logins-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        ours: subprocess.Popen[bytes] | None = None
        database = databases.create()
        synapse = Synapse(
            workdir=workdir / "synapse",
            port=free_port(),
            database={k: database[k] for k in ("host", "port", "user", "dbname") if k in database},
            bcrypt_rounds=args.bcrypt_rounds,
            venv=args.synapse_venv,
        )
        try:
            ours, ours_base = start_ours(workdir, databases.create(), time_cost)
            synapse.start()
            assert synapse.process is not None
            servers = {
                "ours": (ours_base, ours.pid),
                "synapse": (synapse.base_url, synapse.process.pid),
            }
            asyncio.run(compare(servers, args))
        finally:
            synapse.stop()
            if ours is not None:
                ours.terminate()
                ours.wait(30)
            databases.drop_all()


if __name__ == "__main__":
    main()
