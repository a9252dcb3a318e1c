"""Memory of our server process: a login storm, then rounds of steady load.

    python contrib/bench/memory.py [--users N] [--rounds R] [--sends S] [--env K=V ...]

Starts our server on a fresh database, then:
1. registers N users at once and has them all log in at once (a login storm: each
   costs one argon2id hash of `argon2_memory_cost`, 19 MiB by default), printing the
   RSS before, the peak (VmHWM) and the RSS a few seconds after;
2. runs R rounds of the same steady load (S sends across 10 rooms, a sync of each
   user, an incremental sync), printing the RSS after each round: a server without
   leaks levels off.
`--env` passes settings to the server (e.g. `HOMESERVER_PASSWORD_HASH_CONCURRENCY=2`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    PASSWORD,
    Api,
    Databases,
    rss_kib,
    start_ours,
    stop_process,
)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


async def login(session: aiohttp.ClientSession, base: str, user_id: str) -> None:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": PASSWORD,
    }
    async with session.post(base + "/_matrix/client/v3/login", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def storm(base: str, pid: int, users: int) -> list[Api]:
    async with aiohttp.ClientSession() as session:
        anon = Api(session, base)
        before = rss_kib(pid)
        registered = await asyncio.gather(*(anon.register(f"u{i}") for i in range(users)))
        after_register = rss_kib(pid)
        await asyncio.gather(*(login(session, base, u.user_id) for u in registered))
        peak = status_kib(pid, "VmHWM")
        await asyncio.sleep(3)
        after = rss_kib(pid)
    print(
        f"storm of {users}: RSS before {before / 1024:.0f} MiB, after registrations"
        f" {after_register / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB,"
        f" 3 s after the logins {after / 1024:.0f} MiB"
    )
    return registered


async def steady(base: str, pid: int, rounds: int, sends: int) -> None:
    async with aiohttp.ClientSession() as session:
        anon = Api(session, base)
        users = [await anon.register(f"s{i}") for i in range(5)]
        rooms = []
        for _ in range(10):
            room = await users[0].call("POST", "/createRoom", {"preset": "public_chat"})
            rooms.append(room["room_id"])
            for user in users[1:]:
                await user.call("POST", f"/join/{room['room_id']}")
        tokens = [(await u.sync(timeout="0"))["next_batch"] for u in users]
        for n in range(rounds):
            start = time.monotonic()
            for i in range(0, sends, 20):
                await asyncio.gather(
                    *(
                        users[(i + j) % 5].send(rooms[(i + j) % 10], f"message {n}.{i + j}")
                        for j in range(20)
                    )
                )
            for k, user in enumerate(users):
                await user.sync(timeout="0")
                tokens[k] = (await user.sync(since=tokens[k], timeout="0"))["next_batch"]
            print(
                f"round {n + 1}: RSS {rss_kib(pid) / 1024:.1f} MiB"
                f" ({time.monotonic() - start:.1f} s)",
                flush=True,
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sends", type=int, default=1600)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    databases = Databases(args.admin_db)
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_ours(Path(tmp), databases.create(), env)
        try:
            await storm(base, process.pid, args.users)
            if args.rounds:
                await steady(base, process.pid, args.rounds, args.sends)
        finally:
            stop_process(process)
            databases.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
