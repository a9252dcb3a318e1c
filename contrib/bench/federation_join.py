"""Joining a big room held by Synapse: how long until the joining user can send, how
long until the whole member list is known, and the joining server's peak memory
meanwhile; our server against a Synapse joining the same room.

Run through `contrib/bench/federation.py --join-members N [--join-state M]`. A third
server, a Synapse, holds a public room of N members (made through its admin API,
`contrib/synapse_rooms.py`) and M more state events (custom ones with distinct state
keys, sent by the room's admin before the members join); then a user of ours and a user
of a second Synapse join it in turn. Both joiners ask for partial state (Synapse always
does; so do we), so the send comes before the full state; "full" is when `/members`
(which both hold back until the state is whole) lists everyone. Memory is the resident
set of the joining server's process, sampled every 50 ms from just before the join until
the member list is whole (its peak, and its value before the join).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from contrib.bench.harness import Api
from contrib.synapse_rooms import fill_state, populate, register_admin

SAMPLE_S = 0.05


def rss_mib(pid: int) -> float:
    """The process's resident set size now, MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRss:
    """Samples a process's resident set until stopped; the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_mib(pid)
        self.peak = self.before
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(SAMPLE_S)

    def stop(self) -> None:
        self.peak = max(self.peak, rss_mib(self.pid))
        self._task.cancel()


async def big_room(
    session: aiohttp.ClientSession, base: str, server_name: str, members: int, extra_state: int = 0
) -> tuple[str, set[str], float]:
    """A public room of `members` users and `extra_state` more state events on the
    Synapse at `base`; (room id, its members, seconds it took to fill)."""
    token = await register_admin(session, base, "bigroom")
    owner = Api(session, base, token)
    room_id = (await owner.call("POST", "/createRoom", {"preset": "public_chat", "name": "Big"}))[
        "room_id"
    ]
    users = [f"@member{n}:{server_name}" for n in range(members)]
    started = time.monotonic()
    if extra_state:
        # Before the members: each event a Synapse persists costs it work for every
        # local member (push rules). Four at a time: more fork the DAG wider, and
        # Synapse's state resolution on each merge then slows it down.
        await fill_state(session, base, token, room_id, extra_state, concurrency=4)
        print(f"{extra_state} state events in {time.monotonic() - started:.0f} s", flush=True)
    filled_state = time.monotonic()
    await populate(session, base, token, room_id, users)
    print(f"{members} members in {time.monotonic() - filled_state:.0f} s", flush=True)
    return room_id, {f"@bigroom:{server_name}", *users}, time.monotonic() - started


async def measure_join(
    session: aiohttp.ClientSession,
    joiner_base: str,
    joiner_pid: int,
    resident_name: str,
    room_id: str,
    expected: int,
) -> dict[str, float]:
    """One user of the joining server joins, sends, then waits for the member list."""
    user = await Api(session, joiner_base).register(f"joiner{time.monotonic_ns()}")
    memory = PeakRss(joiner_pid)
    started = time.monotonic()
    try:
        await user.call("POST", f"/join/{room_id}", {}, params={"server_name": resident_name})
        joined = time.monotonic()
        await user.send(room_id, "hello big room")
        sent = time.monotonic()
        while True:
            chunk = (await user.call("GET", f"/rooms/{room_id}/members"))["chunk"]
            count = sum(1 for e in chunk if e.get("content", {}).get("membership") == "join")
            if count >= expected + 1:
                break
            await asyncio.sleep(0.2)
        full = time.monotonic()
    finally:
        memory.stop()
    return {
        "join_s": joined - started,
        "send_s": sent - started,
        "full_s": full - started,
        "rss_before_mib": memory.before,
        "rss_peak_mib": memory.peak,
    }


def line(figures: dict[str, Any]) -> str:
    return (
        f"joined {figures['join_s']:.2f} s, sent {figures['send_s']:.2f} s,"
        f" full member list {figures['full_s']:.1f} s;"
        f" RSS {figures['rss_before_mib']:.0f} -> peak {figures['rss_peak_mib']:.0f} MiB"
    )
