"""Benchmark rooms: sending, creating, paging and storing, this server against Synapse.

    python contrib/bench/rooms.py [--seconds 10] [--senders 10] [--rooms 100] [--creators 5]
                                  [--messages 2000] [--members 200] [--only ours|synapse]
                                  [--profile FILE] [--admin-db URL]

Both servers run on the same PostgreSQL (a fresh database each, dropped at the
end), one after the other and each alone (ours is started, measured and stopped,
then Synapse), with rate limits off. For each it measures:

1. message sends by --senders concurrent users for --seconds, (a) all into one
   shared room, (b) one room each: messages/s and p50/p99 send latency;
2. CPU per message in those phases: the server process's own user+system time
   (from /proc), and separately that of the PostgreSQL backends serving its
   database (WAL writer, checkpointer and other shared postgres processes are not
   counted);
3. room creation: --creators concurrent users create --rooms rooms (preset
   private_chat): rooms/s;
4. /messages: events/s paging backwards, limit=100, through a room of --messages
   messages (median of 3 passes);
5. storage: the size of the server's database (after VACUUM and CHECKPOINT)
   before and after --messages messages into one room, and before and after
   --members users join a room and then leave it: bytes per message, per join and
   per leave, both as pg_database_size and as bytes in use (that size less the
   free space in the free space map: PostgreSQL extends busy tables by many empty
   pages at once, which makes the plain size jump by timing).

Then it prints our figures over Synapse's against the targets of the Rooms issue.
With --profile FILE it also samples our server with py-spy during an extra,
unmeasured shared-room send phase, writes the raw (collapsed) stacks to FILE and
prints the functions with the most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
    free_port,
    percentile,
    process_cpu,
    processes_cpu,
    start_ours,
    stop_process,
)
from contrib.bench.synapse import DEFAULT_VENV, Synapse

SETUP_CONCURRENCY = 8
PAGE_LIMIT = 100
PY_SPY = Path(sys.executable).with_name("py-spy")

Operation = Callable[[int], Awaitable[Any]]


@dataclass
class Server:
    name: str
    base: str
    pid: int
    dbname: str
    databases: Databases

    def cpu(self) -> tuple[float, dict[int, float]]:
        """(server process CPU, CPU per PostgreSQL backend of its database)."""
        return process_cpu(self.pid), processes_cpu(self.databases.backend_pids(self.dbname))

    def size(self) -> tuple[int, int]:
        """(database size, bytes in use) after VACUUM and CHECKPOINT."""
        return self.databases.settled_size(self.dbname)


@dataclass
class Phase:
    """Operations run by concurrent workers, and what they cost."""

    done: int
    errors: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    db_cpu: float
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99) if self.latencies else float("nan")

    @property
    def cpu_per_op(self) -> float:
        return self.server_cpu / self.done if self.done else float("nan")

    @property
    def db_cpu_per_op(self) -> float:
        return self.db_cpu / self.done if self.done else float("nan")

    def line(self, unit: str) -> str:
        text = (
            f"{self.rate:8.1f} {unit}/s  p50 {self.p50 * 1000:7.1f} ms"
            f"  p99 {self.p99 * 1000:7.1f} ms  server CPU {self.cpu_per_op * 1000:6.2f} ms"
            f"  + postgres backends {self.db_cpu_per_op * 1000:6.2f} ms per op"
            f"  ({self.done} in {self.seconds:.1f} s"
        )
        if self.errors:
            text += f", {self.errors} errors, first: {self.first_error[:200]}"
        return text + ")"


@dataclass
class Growth:
    """Database growth per operation: in pg_database_size, and in bytes in use."""

    size: float
    used: float

    @classmethod
    def of(cls, before: tuple[int, int], after: tuple[int, int], operations: int) -> Growth:
        count = max(1, operations)
        return cls((after[0] - before[0]) / count, (after[1] - before[1]) / count)

    def __str__(self) -> str:
        return f"{self.size:.0f} bytes (in use {self.used:.0f})"


@dataclass
class Figures:
    shared: Phase | None = None
    separate: Phase | None = None
    creation: Phase | None = None
    fill: Phase | None = None
    joins: Phase | None = None
    leaves: Phase | None = None
    paged_events: int = 0
    page_rate: float = 0.0
    per_message: Growth = field(default_factory=lambda: Growth(0, 0))
    per_join: Growth = field(default_factory=lambda: Growth(0, 0))
    per_leave: Growth = field(default_factory=lambda: Growth(0, 0))
    per_membership: Growth = field(default_factory=lambda: Growth(0, 0))


async def load(
    server: Server,
    operations: Sequence[Operation],
    *,
    seconds: float | None = None,
    total: int | None = None,
) -> Phase:
    """One worker per operation, each calling its operation with a running count
    until `seconds` have passed or `total` operations have started."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else float("inf")
    counter = 0

    async def worker(operation: Operation) -> None:
        nonlocal counter, errors, first_error
        while time.monotonic() < deadline and (total is None or counter < total):
            index = counter
            counter += 1
            begun = time.monotonic()
            try:
                await operation(index)
            except (RuntimeError, aiohttp.ClientError, ValueError) as e:
                errors += 1
                first_error = first_error or repr(e)
                continue
            latencies.append(time.monotonic() - begun)

    server_before, db_before = server.cpu()
    started = time.monotonic()
    await asyncio.gather(*(worker(operation) for operation in operations))
    elapsed = time.monotonic() - started
    server_after, db_after = server.cpu()
    return Phase(
        done=len(latencies),
        errors=errors,
        seconds=elapsed,
        latencies=latencies,
        server_cpu=server_after - server_before,
        db_cpu=cpu_delta(db_before, db_after),
        first_error=first_error,
    )


def sender_ops(senders: Sequence[Api], rooms: Sequence[str]) -> list[Operation]:
    def op(sender: Api, room_id: str, index: int) -> Awaitable[None]:
        return sender.send(room_id, f"benchmark message number {index:06d}")

    return [functools.partial(op, s, r) for s, r in zip(senders, rooms, strict=True)]


async def create_room(user: Api, preset: str, index: int = 0) -> str:
    # A distinct create event: in room v12 two creations alike in content and
    # millisecond would otherwise name the same room.
    body = {"preset": preset, "creation_content": {"org.example.bench": index}}
    return str((await user.call("POST", "/createRoom", body))["room_id"])


async def join_all(users: Sequence[Api], room_id: str) -> None:
    await bounded(
        [functools.partial(user.call, "POST", f"/join/{room_id}", {}) for user in users],
        SETUP_CONCURRENCY,
    )


async def paginate(user: Api, room_id: str) -> tuple[int, float]:
    """(events, seconds) to page backwards from the end of a room to its start."""
    events = 0
    params = {"dir": "b", "limit": str(PAGE_LIMIT)}
    started = time.monotonic()
    while True:
        page = await user.call("GET", f"/rooms/{room_id}/messages", params=params)
        chunk = page.get("chunk", [])
        events += len(chunk)
        if not chunk or "end" not in page:
            break
        params["from"] = page["end"]
    return events, time.monotonic() - started


async def profile_sends(
    server: Server, senders: Sequence[Api], room_id: str, seconds: float, path: Path
) -> None:
    """py-spy samples of our server while the senders send into one room."""
    if not PY_SPY.exists():
        print(f"  (no {PY_SPY}: no profile)")
        return
    spy = await asyncio.create_subprocess_exec(
        *(str(PY_SPY), "record", "--format", "raw", "--rate", "200", "-o", str(path)),
        *("--pid", str(server.pid)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    phase = await load(server, sender_ops(senders, [room_id] * len(senders)), seconds=seconds)
    spy.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(spy.communicate(), 60)
    print(f"  profiled send phase (not counted): {phase.line('msgs')}")
    print_hotspots(path, stderr.decode(errors="replace"))


# Leaf frames where a thread is waiting, not working: py-spy still samples them.
IDLE_LEAVES = ("concurrent/futures/thread.py:_worker", "selectors.py:EpollSelector.select")


def print_hotspots(path: Path, spy_output: str, top: int = 25) -> None:
    """Functions by self and inclusive share of the busy samples in a collapsed-stack
    file (samples of idle thread-pool workers and of the event loop waiting in epoll
    are left out)."""
    if not path.exists():
        print(f"  py-spy wrote nothing: {spy_output[-500:]}")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = busy = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [frame_name(frame) for frame in stack.split(";")]
        if frames[-1] in IDLE_LEAVES:
            continue
        busy += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not busy:
        print(f"  no busy samples (of {samples})")
        return
    print(f"  {busy} busy samples of {samples}; self time, share of busy:")
    for name, count in own.most_common(top):
        print(f"    {count / busy:6.1%}  {name}")
    print("  inclusive time, our code and the database driver:")
    ours = [
        (n, c)
        for n, c in inclusive.most_common()
        if n.startswith(("homeserver/", "psycopg/")) and c < busy
    ]
    for name, count in ours[: top * 2]:
        print(f"    {count / busy:6.1%}  {name}")


def frame_name(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'file path:function', paths shortened."""
    function, _, where = frame.partition(" (")
    filename = where.rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{function}"


@dataclass
class Cast:
    """The accounts and rooms every measurement uses, set up before the clock starts."""

    senders: list[Api]
    joiners: list[Api]
    shared: str  # the room all senders are in
    own_rooms: list[str]  # a room each


async def set_up(server: Server, anonymous: Api, args: argparse.Namespace) -> Cast:
    started = time.monotonic()
    senders: list[Api] = []
    joiners: list[Api] = []

    async def register(into: list[Api], name: str) -> None:
        into.append(await anonymous.register(name))

    await bounded(
        [functools.partial(register, senders, f"sender{i}") for i in range(args.senders)]
        + [functools.partial(register, joiners, f"joiner{i}") for i in range(args.members)],
        SETUP_CONCURRENCY,
    )
    shared = await create_room(senders[0], "public_chat")
    await join_all(senders[1:], shared)
    own_rooms = [await create_room(sender, "private_chat") for sender in senders]
    for sender, room_id in zip(senders, own_rooms, strict=True):  # warm-up
        await sender.send(room_id, "warm-up")
        await sender.send(shared, "warm-up")
    print(f"  {server.name}: set up in {time.monotonic() - started:.0f}s")
    return Cast(senders, joiners, shared, own_rooms)


async def measure_sends_and_creation(
    server: Server, cast: Cast, args: argparse.Namespace, figures: Figures
) -> None:
    """1-2. sends, shared room and a room each; 3. room creation."""
    senders = cast.senders
    figures.shared = await load(
        server, sender_ops(senders, [cast.shared] * len(senders)), seconds=args.seconds
    )
    print(f"  {server.name}: sends, one shared room: {figures.shared.line('msgs')}")
    figures.separate = await load(server, sender_ops(senders, cast.own_rooms), seconds=args.seconds)
    print(f"  {server.name}: sends, a room each:     {figures.separate.line('msgs')}")

    def creation(creator: Api, index: int) -> Awaitable[str]:
        return create_room(creator, "private_chat", 1000 + index)

    creators = senders[: args.creators]
    figures.creation = await load(
        server, [functools.partial(creation, c) for c in creators], total=args.rooms
    )
    print(f"  {server.name}: room creation:         {figures.creation.line('rooms')}")


async def measure_messages(
    server: Server, cast: Cast, args: argparse.Namespace, figures: Figures
) -> None:
    """5a. storage per message, in the room that 4. /messages then pages through."""
    senders = cast.senders
    big = await create_room(senders[0], "public_chat", 1)
    await join_all(senders[1:], big)
    before = server.size()
    figures.fill = await load(
        server, sender_ops(senders, [big] * len(senders)), total=args.messages
    )
    after = server.size()
    figures.per_message = Growth.of(before, after, figures.fill.done)
    print(
        f"  {server.name}: {figures.fill.done} messages into one room:"
        f" {figures.per_message} per message; sends {figures.fill.line('msgs')}"
    )

    passes = [await paginate(senders[1], big) for _ in range(3)]
    figures.paged_events = passes[0][0]
    figures.page_rate = statistics.median(events / seconds for events, seconds in passes)
    print(
        f"  {server.name}: /messages backwards, limit {PAGE_LIMIT}:"
        f" {figures.page_rate:.0f} events/s"
        f" ({figures.paged_events} events, {[round(s, 3) for _, s in passes]} s)"
    )


async def measure_membership(
    server: Server, cast: Cast, args: argparse.Namespace, figures: Figures
) -> None:
    """5b. storage per membership change."""
    joiners = cast.joiners
    members = await create_room(cast.senders[0], "public_chat", 2)
    before = server.size()

    def join(index: int) -> Awaitable[Any]:
        return joiners[index].call("POST", f"/join/{members}", {})

    def leave(index: int) -> Awaitable[Any]:
        return joiners[index].call("POST", f"/rooms/{members}/leave", {})

    workers = args.senders
    figures.joins = await load(server, [join] * workers, total=len(joiners))
    joined = server.size()
    figures.leaves = await load(server, [leave] * workers, total=len(joiners))
    left = server.size()
    figures.per_join = Growth.of(before, joined, figures.joins.done)
    figures.per_leave = Growth.of(joined, left, figures.leaves.done)
    figures.per_membership = Growth.of(before, left, figures.joins.done + figures.leaves.done)
    print(f"  {server.name}: joins:  {figures.joins.line('joins')}")
    print(f"  {server.name}: leaves: {figures.leaves.line('leaves')}")
    print(f"  {server.name}: storage per join {figures.per_join}, per leave {figures.per_leave}")


async def measure(server: Server, args: argparse.Namespace) -> Figures:
    figures = Figures()
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        cast = await set_up(server, Api(session, server.base), args)
        await measure_sends_and_creation(server, cast, args, figures)
        await measure_messages(server, cast, args, figures)
        await measure_membership(server, cast, args, figures)
        if args.profile and server.name == "ours":
            await profile_sends(server, cast.senders, cast.shared, args.seconds, args.profile)
    return figures


def report(ours: Figures, synapse: Figures) -> None:
    rows: list[tuple[str, float, float, str, bool | None]] = []

    def row(label: str, mine: float, theirs: float, target: str, better: str) -> None:
        ratio = mine / theirs if theirs else float("nan")
        passed: bool | None = None
        if target:
            bound = float(target)
            passed = ratio >= bound if better == "higher" else ratio <= bound
        rows.append((label, mine, theirs, target, passed))
        sign = {"higher": ">=", "lower": "<="}[better]
        goal = f"target {sign} {target}" if target else ""
        verdict = {None: "", True: "ok", False: "MISSED"}[passed]
        print(f"  {label:38} {mine:12.2f} {theirs:12.2f} {ratio:8.3f}x  {goal:14} {verdict}")

    print("\nours vs Synapse (ratio = ours / Synapse):")
    print(f"  {'':38} {'ours':>12} {'synapse':>12} {'ratio':>9}")
    for label, a, b in (
        ("shared room", ours.shared, synapse.shared),
        (
            "room each",
            ours.separate,
            synapse.separate,
        ),
    ):
        assert a is not None and b is not None
        row(f"send msgs/s, {label}", a.rate, b.rate, "5", "higher")
        row(f"server CPU ms/msg, {label}", a.cpu_per_op * 1e3, b.cpu_per_op * 1e3, "0.2", "lower")
        row(
            f"  + postgres backends ms/msg, {label}",
            a.db_cpu_per_op * 1e3,
            b.db_cpu_per_op * 1e3,
            "",
            "lower",
        )
        row(f"send p50 ms, {label}", a.p50 * 1e3, b.p50 * 1e3, "", "lower")
        row(f"send p99 ms, {label}", a.p99 * 1e3, b.p99 * 1e3, "1", "lower")
    assert ours.creation is not None and synapse.creation is not None
    row("rooms created/s", ours.creation.rate, synapse.creation.rate, "3", "higher")
    row(
        "server CPU ms/room created",
        ours.creation.cpu_per_op * 1e3,
        synapse.creation.cpu_per_op * 1e3,
        "",
        "lower",
    )
    row("/messages events/s", ours.page_rate, synapse.page_rate, "2", "higher")
    for label, mine, theirs in (
        ("message", ours.per_message, synapse.per_message),
        ("membership change", ours.per_membership, synapse.per_membership),
    ):
        row(f"bytes/{label} (db size)", mine.size, theirs.size, "0.5", "lower")
        row(f"bytes/{label} (in use)", mine.used, theirs.used, "0.5", "lower")
    row("  bytes/join (in use)", ours.per_join.used, synapse.per_join.used, "", "lower")
    row("  bytes/leave (in use)", ours.per_leave.used, synapse.per_leave.used, "", "lower")
    assert ours.joins is not None and synapse.joins is not None
    assert ours.leaves is not None and synapse.leaves is not None
    row("joins/s", ours.joins.rate, synapse.joins.rate, "", "higher")
    row("leaves/s", ours.leaves.rate, synapse.leaves.rate, "", "higher")
    missed = [label for label, *_, passed in rows if passed is False]
    print(f"\ntargets missed: {', '.join(missed) if missed else 'none'}")


async def run(args: argparse.Namespace) -> None:
    databases = Databases(args.admin_db)
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        try:
            if args.only in (None, "ours"):
                database = databases.create()
                # Registration hashes are not what is measured here: make them cheap.
                process, base = start_ours(workdir, database, {"HOMESERVER_ARGON2_TIME_COST": "1"})
                try:
                    server = Server("ours", base, process.pid, database["dbname"], databases)
                    results["ours"] = await measure(server, args)
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
                    server = Server(
                        "synapse",
                        synapse.base_url,
                        synapse.process.pid,
                        database["dbname"],
                        databases,
                    )
                    results["synapse"] = await measure(server, args)
                finally:
                    synapse.stop()
        finally:
            databases.drop_all()
    if len(results) == 2:
        report(results["ours"], results["synapse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per send phase")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rooms", type=int, default=100, help="rooms to create")
    parser.add_argument("--creators", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000, help="in the paged room")
    parser.add_argument("--members", type=int, default=200, help="users joining, then leaving")
    parser.add_argument("--only", choices=("ours", "synapse"))
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of our sends")
    parser.add_argument("--synapse-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--admin-db",
        default=DEFAULT_ADMIN_DB,
        help="PostgreSQL URL with the right to create databases",
    )
    args = parser.parse_args()
    if args.creators > args.senders:
        parser.error("--creators must not exceed --senders")
    print(f"cores: {os.cpu_count()}; server CPU is the server process's own time")
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"took {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
