"""Benchmark push evaluation and unread counts (our server only).

    python contrib/bench/push.py [--sizes 10,200,1000] [--messages 200] [--unread 10000]
                                 [--senders 8] [--admin-db URL]

Push rules are evaluated, inside the transaction that stores an event, for every
local member of the room, and sync reads each room's unread counts. This measures:

1. for each room size N in --sizes (N local members, created through the API with
   open registration and argon2 time cost 1): --messages messages sent into the
   room, one at a time: the server process's CPU per message (from /proc), that of
   the PostgreSQL backends serving its database, and the send latency (p50);
2. a user with --unread unread notifications in one room (sent by --senders
   concurrent users): the time of an incremental /sync that includes the room
   (one new message each time) and of an initial /sync with a one-event timeline,
   median of 20 each, and the counts they report.
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
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contrib.bench.harness import (
    DEFAULT_ADMIN_DB,
    Api,
    Databases,
    bounded,
    cpu_delta,
    process_cpu,
    processes_cpu,
    start_ours,
    stop_process,
)

SETUP_CONCURRENCY = 8
REPEATS = 20


async def create_room(user: Api, index: int) -> str:
    body = {"preset": "public_chat", "creation_content": {"org.example.bench": index}}
    room_id: str = (await user.call("POST", "/createRoom", body))["room_id"]
    return room_id


async def join_all(users: list[Api], room_id: str) -> None:
    await bounded(
        [functools.partial(u.call, "POST", f"/join/{room_id}", {}) for u in users],
        SETUP_CONCURRENCY,
    )


async def per_message(
    pid: int, databases: Databases, dbname: str, sender: Api, room_id: str, count: int
) -> tuple[float, float, float]:
    """(server CPU ms, postgres backends CPU ms, p50 latency ms) per message."""
    for i in range(5):  # warm-up: caches of the room and of its members' rules
        await sender.send(room_id, f"warm-up {i}")
    latencies: list[float] = []
    server_before = process_cpu(pid)
    db_before = processes_cpu(databases.backend_pids(dbname))
    for i in range(count):
        started = time.monotonic()
        await sender.send(room_id, f"message {i}: hello everyone")
        latencies.append(time.monotonic() - started)
    server = process_cpu(pid) - server_before
    db = cpu_delta(db_before, processes_cpu(databases.backend_pids(dbname)))
    return server / count * 1e3, db / count * 1e3, statistics.median(latencies) * 1e3


async def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = await call()
    return time.monotonic() - started, result


def counts_of(body: Any, room_id: str) -> tuple[int, int]:
    room = body["rooms"]["join"][room_id]
    n = room.get("unread_notifications", {})
    return n.get("notification_count", 0), n.get("highlight_count", 0)


async def unread_sync(users: list[Api], reader: Api, unread: int) -> None:
    """Time /sync for `reader` with `unread` unread notifications in one room."""
    room_id = await create_room(users[0], 99)
    await join_all([reader, *users[1:]], room_id)
    started = time.monotonic()
    senders = users

    def send(index: int) -> Any:
        return senders[index % len(senders)].send(room_id, f"unread {index}")

    await bounded([functools.partial(send, i) for i in range(unread)], len(senders))
    print(f"  {unread} messages sent in {time.monotonic() - started:.0f}s")
    one = json.dumps({"room": {"timeline": {"limit": 1}}})
    initial: list[float] = []
    body: Any = None
    for _ in range(REPEATS):
        seconds, body = await timed(functools.partial(reader.sync, filter=one))
        initial.append(seconds)
    print(
        f"  initial /sync (timeline limit 1): p50 {statistics.median(initial) * 1e3:7.1f} ms"
        f"  counts {counts_of(body, room_id)}"
    )
    token = body["next_batch"]
    incremental: list[float] = []
    for i in range(REPEATS):
        await users[0].send(room_id, f"one more {i}")
        seconds, body = await timed(functools.partial(reader.sync, since=token, filter=one))
        incremental.append(seconds)
        token = body["next_batch"]
    print(
        f"  incremental /sync with the room:  p50 {statistics.median(incremental) * 1e3:7.1f} ms"
        f"  counts {counts_of(body, room_id)}"
    )


async def measure(pid: int, base: str, databases: Databases, dbname: str, args: Any) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        anonymous = Api(session, base)
        users: list[Api] = []

        async def register(name: str) -> None:
            users.append(await anonymous.register(name))

        started = time.monotonic()
        await bounded(
            [functools.partial(register, f"member{i}") for i in range(max(sizes))],
            SETUP_CONCURRENCY,
        )
        users.sort(key=lambda u: int(u.user_id[len("@member") :].split(":")[0]))
        print(f"  {len(users)} users registered in {time.monotonic() - started:.0f}s")
        for index, size in enumerate(sizes):
            sender = users[0]
            room_id = await create_room(sender, index)
            await join_all(users[1:size], room_id)
            server, db, p50 = await per_message(
                pid, databases, dbname, sender, room_id, args.messages
            )
            print(
                f"  room of {size:5} local members: server CPU {server:6.2f} ms/msg"
                f"  + postgres backends {db:6.2f} ms/msg  send p50 {p50:6.1f} ms"
            )
        if args.unread:
            await unread_sync(users[1 : 1 + args.senders], users[0], args.unread)


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        try:
            database = databases.create()
            # Registration hashes are not what is measured here: make them cheap.
            process, base = start_ours(workdir, database, {"HOMESERVER_ARGON2_TIME_COST": "1"})
            try:
                await measure(process.pid, base, databases, database["dbname"], args)
            finally:
                stop_process(process)
        finally:
            databases.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,200,1000", help="room sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=200, help="messages per room size")
    parser.add_argument("--unread", type=int, default=10_000, help="unread notifications")
    parser.add_argument("--senders", type=int, default=8, help="users sending the unread")
    parser.add_argument("--admin-db", default=DEFAULT_ADMIN_DB)
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"took {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
