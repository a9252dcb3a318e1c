"""`kill -9` of one of three processes under a steady stream of sends through nginx.

Several clients send as fast as they are answered; each retries a failed send with the
same txnId through the balancer, so the retry may reach another process. The victim is
the process that owns a pusher (found from the gateway's side of the connection, not
assumed), caught in the middle of a delivery; it is frozen for a moment first so that
sends are surely in flight on it when it dies. Afterwards a fresh client reads every
acknowledged message exactly once, in each sender's order; retries of acknowledged
sends on the survivors give back the same events; and the pusher's notifications resume
on a survivor within 10 s, every message notified once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.cluster.harness import Cluster
from tests.cluster.test_cluster import RETRYABLE, User, whole_timeline

SENDERS = 4
STREAM_BEFORE_S = 1.5
FROZEN_S = 0.5
STREAM_AFTER_S = 2.5
TAKEOVER_BUDGET_S = 10.0
DELIVERY_BUDGET_S = 30.0


def owner_of(pids: list[int], local_port: int) -> int | None:
    """Which of `pids` (by index) has the loopback TCP socket bound to `local_port`: the
    client side of a connection the gateway sees coming from that port."""
    wanted = f"0100007F:{local_port:04X}"
    inodes = {
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1].upper() == wanted
    }
    for index, pid in enumerate(pids):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return index
    return None


class Gateway:
    """A push gateway on loopback: it holds its first request unanswered (its sender is
    then killed mid-delivery) and records every notification it answers, with the port
    process it came from (an index into `pids()`, None for none of them)."""

    def __init__(self, pids: Any) -> None:
        self.pids = pids
        self.received: list[tuple[str, int | None]] = []
        self.held_from: int | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        sender = owner_of(self.pids(), int(peer[1])) if peer else None
        if not self.held.is_set():
            self.held_from = sender
            self.held.set()
            await self.release.wait()
            return web.json_response({"rejected": []})
        self.received.append((body["notification"]["event_id"], sender))
        self.changed.set()
        return web.json_response({"rejected": []})

    async def until(self, condition: Any, budget: float) -> float:
        """Seconds until `condition()` holds, failing past `budget`."""
        start = time.monotonic()
        while not condition():
            self.changed.clear()
            left = budget - (time.monotonic() - start)
            assert left > 0, f"gateway: {len(self.received)} notifications, condition unmet"
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
        return time.monotonic() - start


class Sender:
    """One client sending numbered messages through the balancer, each retried with its
    txnId until acknowledged."""

    def __init__(self, user: User, base: str, room_id: str) -> None:
        self.user = user
        self.base = base
        self.room_id = room_id
        self.acknowledged: list[tuple[str, str, str]] = []  # (txnId, body, event id)
        self.retries = 0
        self.spans: list[tuple[float, float]] = []  # (monotonic) each send's first try, answer

    async def send(self, txn: str, body: str) -> str:
        deadline = time.monotonic() + 30
        path = f"/rooms/{self.room_id}/send/m.room.message/{txn}"
        while True:
            assert time.monotonic() < deadline, f"{txn} never acknowledged"
            try:
                status, data = await self.user.request(
                    self.base, "PUT", path, {"msgtype": "m.text", "body": body}
                )
            except (TimeoutError, aiohttp.ClientError):
                status, data = -1, None
            if status == 200:
                return str(data["event_id"])
            assert status in RETRYABLE or status == -1, (status, data)
            self.retries += 1
            await asyncio.sleep(0.05)

    async def stream(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            txn, body = f"k{n}", f"{self.user.user_id} {n}"
            started = time.monotonic()
            self.acknowledged.append((txn, body, await self.send(txn, body)))
            self.spans.append((started, time.monotonic()))
            n += 1


async def _room(cluster: Cluster, session: aiohttp.ClientSession) -> tuple[User, list[User], str]:
    """A receiver with a pusher and SENDERS senders, registered on every process in turn."""
    tag = str(time.monotonic_ns())
    receiver = await User.register(session, cluster.base(0), f"r-{tag}")
    senders = [
        await User.register(session, cluster.base((i + 1) % 3), f"s{i}-{tag}")
        for i in range(SENDERS)
    ]
    room = await senders[0].ok(cluster.url, "POST", "/createRoom", {"preset": "public_chat"})
    for user in [receiver, *senders[1:]]:
        await user.ok(cluster.url, "POST", f"/join/{room['room_id']}", {})
    return receiver, senders, room["room_id"]


async def _set_pusher(receiver: User, cluster: Cluster, gateway_port: int) -> None:
    await receiver.ok(
        cluster.url,
        "POST",
        "/pushers/set",
        {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": "key",
            "app_display_name": "Example",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": f"http://127.0.0.1:{gateway_port}/_matrix/push/v1/notify"},
        },
    )


def _pids(cluster: Cluster) -> list[int]:
    return [s.process.pid if s is not None else -1 for s in cluster.servers]


async def test_kill_9_under_load_loses_nothing_doubles_nothing_and_push_resumes(
    cluster: Cluster,
) -> None:
    gateway = Gateway(lambda: _pids(cluster))
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", gateway.notify)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            assert server.port is not None
            await _run(cluster, session, gateway, server.port)
    finally:
        gateway.release.set()
        await server.close()


async def _run(
    cluster: Cluster, session: aiohttp.ClientSession, gateway: Gateway, gateway_port: int
) -> None:
    receiver, users, room_id = await _room(cluster, session)
    await _set_pusher(receiver, cluster, gateway_port)
    # A first message wakes some process's push sender, which takes the pusher and is
    # held by the gateway: that process is the victim.
    first = await Sender(users[0], cluster.url, room_id).send("first", "first")
    await asyncio.wait_for(gateway.held.wait(), TAKEOVER_BUDGET_S)
    victim = gateway.held_from
    assert victim is not None, "the held push request came from none of the processes"

    senders = [Sender(u, cluster.url, room_id) for u in users]
    stop = asyncio.Event()
    streams = [asyncio.create_task(s.stream(stop)) for s in senders]
    await asyncio.sleep(STREAM_BEFORE_S)
    server = cluster.servers[victim]
    assert server is not None
    # Frozen, then killed: the sends the balancer gave it meanwhile die in flight.
    os.kill(server.process.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    await asyncio.sleep(FROZEN_S)
    before_kill = sum(len(s.acknowledged) for s in senders)
    await asyncio.to_thread(cluster.kill, victim)
    killed = time.monotonic()
    took = await gateway.until(
        lambda: any(e == first for e, _ in gateway.received), TAKEOVER_BUDGET_S
    )
    await asyncio.sleep(max(0.0, STREAM_AFTER_S - (time.monotonic() - killed)))
    stop.set()
    await asyncio.gather(*streams)
    total = sum(len(s.acknowledged) for s in senders)
    assert total > before_kill, "the survivors kept acknowledging sends"
    # Sends waiting through the freeze on the victim, answered by a survivor after the kill.
    cut = [1 for s in senders for start, end in s.spans if start < frozen and end > killed]
    assert cut, "no send was in flight on the victim when it died"

    await _check_timeline(cluster, session, senders, room_id, first)
    await _check_retries(cluster, senders, victim)
    await _check_push(cluster, gateway, senders, first, victim)
    retried = sum(s.retries for s in senders)
    print(
        f"{total} sends acknowledged ({before_kill} before the kill, {len(cut)} in flight on"
        f" the victim, {retried} retried by the clients);"
        f" push resumed {took:.1f}s after the kill"
    )


async def _check_timeline(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    senders: list[Sender],
    room_id: str,
    first: str,
) -> None:
    """A fresh client, joining after it all, reads each acknowledged message once, in its
    sender's order, and nothing else."""
    reader = await User.register(session, cluster.url, f"fresh-{time.monotonic_ns()}")
    await reader.ok(cluster.url, "POST", f"/join/{room_id}", {})
    timeline = await whole_timeline(reader, cluster.url, room_id)
    messages = [e for e in timeline if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages].count(first) == 1
    for sender in senders:
        mine = [
            (e["content"]["body"], e["event_id"])
            for e in messages
            if e["sender"] == sender.user.user_id and e["event_id"] != first
        ]
        assert mine == [(body, event_id) for _, body, event_id in sender.acknowledged]


async def _check_retries(cluster: Cluster, senders: list[Sender], victim: int) -> None:
    """Acknowledged sends retried on each survivor and through the balancer: the same
    event, not a new one (the txnId is known to every process)."""
    bases = [cluster.base(i) for i in range(3) if i != victim] + [cluster.url]
    for sender in senders:
        sample = {0, len(sender.acknowledged) // 2, len(sender.acknowledged) - 1}
        for n in sorted(sample):
            txn, body, event_id = sender.acknowledged[n]
            for base in bases:
                again = await Sender(sender.user, base, sender.room_id).send(txn, body)
                assert again == event_id, (txn, base)


async def _check_push(
    cluster: Cluster, gateway: Gateway, senders: list[Sender], first: str, victim: int
) -> None:
    """Every message notified once, all by survivors (the victim's request never got an
    answer, so its event was notified again)."""
    wanted = {first} | {e for s in senders for _, _, e in s.acknowledged}
    await gateway.until(lambda: wanted <= {e for e, _ in gateway.received}, DELIVERY_BUDGET_S)
    notified = [e for e, _ in gateway.received]
    assert len(notified) == len(set(notified)), "a notification was sent twice"
    assert set(notified) == wanted
    senders_seen = {process for _, process in gateway.received}
    assert senders_seen and victim not in senders_seen and None not in senders_seen
