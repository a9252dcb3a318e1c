"""The outbound federation queue against a stub destination on loopback that fails on
demand: order, transaction limits, backoff, catch-up, restarts, and one sender per
destination across worker processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from federation.keys import ServerKey
from federation.xmatrix import verify_request
from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.sender import FederationSender
from homeserver.storage.remote import outbox as federation_outbox
from tests.integration.conftest import CLIENT_V3, auth_header, make_user
from tests.integration.peers import PEER_CONFIG, free_port


@dataclass
class StubDestination:
    """A destination that answers 500 to its first `failures` transactions."""

    name: str
    sender_key: ServerKey | None = None
    sender_name: str = ""
    failures: int = 0
    delay: float = 0.0
    attempts: list[tuple[float, str]] = field(default_factory=list)  # (time, txn id)
    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (txn id, body)
    hang: bool = False  # never answer (the sender is stopped mid-request)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def send(self, request: web.Request) -> web.Response:
        raw = await request.read()
        content = await request.json()
        assert self.sender_key is not None
        verify_request(
            request.headers.get("Authorization"),
            method="PUT",
            uri=request.raw_path,
            content=content,
            our_server_name=self.name,
            lookup=lambda server, key_id: self.sender_key if server == self.sender_name else None,
            now_ms=int(time.time() * 1000),
        )
        assert raw
        self.attempts.append((time.monotonic(), request.match_info["txn_id"]))
        self.bodies.append((request.match_info["txn_id"], content))
        if self.hang:
            await asyncio.sleep(3600)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.failures > 0:
                self.failures -= 1
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=500)
            self.accepted.append(content)
            return web.json_response({"pdus": {}})
        finally:
            self.in_flight -= 1

    def pdu_ids(self) -> list[str]:
        return [hash_of(pdu) for txn in self.accepted for pdu in txn["pdus"]]

    def edus(self) -> list[dict[str, Any]]:
        return [edu for txn in self.accepted for edu in txn["edus"]]


def hash_of(pdu: dict[str, Any]) -> str:
    return str(pdu["content"]["body"])


@dataclass
class Setup:
    hs: Homeserver
    stub: StubDestination
    event_ids: list[str]
    senders: list[FederationSender] = field(default_factory=list)
    servers: list[TestServer] = field(default_factory=list)

    def sender(self, **kw: Any) -> FederationSender:
        sender = FederationSender(self.hs.db, self.hs.remote_client, self.hs.server_name, **kw)
        self.senders.append(sender)
        return sender

    async def add_stub(self) -> StubDestination:
        """Another destination (on a port of its own)."""
        stub, server = await start_stub(self.hs)
        self.servers.append(server)
        return stub


async def start_stub(hs: Homeserver) -> tuple[StubDestination, TestServer]:
    port = free_port()
    stub = StubDestination(f"127.0.0.1:{port}")
    stub.sender_key = ServerKey(hs.signing_key.verify_key, 2**62)
    stub.sender_name = hs.server_name
    app = web.Application()
    app.router.add_put("/_matrix/federation/v1/send/{txn_id}", stub.send)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return stub, server


@pytest.fixture
async def setup(homeserver_client: Callable[..., Any]) -> AsyncIterator[Setup]:
    port = free_port()
    client: TestClient[Any, Any] = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    hs: Homeserver = client.server.app[HOMESERVER]
    # The homeserver's own sender stays out of the way: the tests run their own.
    await hs.remote_sender.close()

    stub, server = await start_stub(hs)

    _, token = await make_user(client, "alice")
    resp = await client.post(f"{CLIENT_V3}/createRoom", json={}, headers=auth_header(token))
    room_id = (await resp.json())["room_id"]
    event_ids = []
    for i in range(120):
        resp = await client.put(
            f"{CLIENT_V3}/rooms/{room_id}/send/m.room.message/t{i}",
            json={"msgtype": "m.text", "body": f"{i}"},
            headers=auth_header(token),
        )
        event_ids.append((await resp.json())["event_id"])
    state = Setup(hs, stub, event_ids, servers=[server])
    yield state
    for sender in state.senders:
        await sender.close()
    for server in state.servers:
        await server.close()


async def wait_for(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def wait_for_async(probe: Callable[[], Awaitable[Any]], expected: Any) -> None:
    deadline = time.monotonic() + 20
    while await probe() != expected:
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_delivers_in_order_despite_failures_with_backoff(setup: Setup) -> None:
    stub, hs = setup.stub, setup.hs
    stub.failures = 3
    # Queued before the sender starts (as after a restart), so that the first transaction
    # is the same batch on every retry.
    async with hs.db.pool.connection() as conn:
        for event_id in setup.event_ids[:60]:
            await federation_outbox.enqueue_pdus(conn, [stub.name], event_id)
        for i in range(3):
            await federation_outbox.enqueue_edu(
                conn, stub.name, f'{{"edu_type": "m.test", "content": {{"i": {i}}}}}'
            )
    sender = setup.sender(min_backoff_s=0.1, max_backoff_s=10)
    await sender.start()

    await wait_for(lambda: len(stub.pdu_ids()) == 60 and len(stub.edus()) == 3)
    assert stub.pdu_ids() == [str(i) for i in range(60)]
    assert [e["content"]["i"] for e in stub.edus()] == [0, 1, 2]
    assert [(len(txn["pdus"]), len(txn["edus"])) for txn in stub.accepted] == [(50, 0), (10, 3)]
    assert all(txn["origin"] == hs.server_name for txn in stub.accepted)

    # Three failed attempts of one transaction, retried under the same id after growing
    # waits (0.1 s, 0.2 s, 0.4 s), then the rest.
    times = [t for t, _ in stub.attempts]
    first_ids = {txn_id for _, txn_id in stub.attempts[:4]}
    assert len(first_ids) == 1
    gaps = [b - a for a, b in itertools.pairwise(times[:4])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps

    async with hs.db.pool.connection() as conn:
        await wait_for_async(lambda: federation_outbox.has_rows(conn, stub.name), False)
        health = await federation_outbox.get_health(conn, stub.name)
        assert (health.failure_count, health.retry_at_ts) == (0, None)


async def test_queue_survives_a_restart_of_the_sender(setup: Setup) -> None:
    stub = setup.stub
    stub.failures = 10**6
    first = setup.sender(min_backoff_s=0.05)
    await first.start()
    for event_id in setup.event_ids[:120]:
        await first.send_pdu([stub.name], event_id)
    await wait_for(lambda: len(stub.attempts) >= 2)
    await first.close()
    begun = stub.bodies[-1]

    stub.failures = 0
    second = setup.sender(min_backoff_s=0.05)
    await second.start()  # its first sweep finds the queue
    await wait_for(lambda: len(stub.pdu_ids()) == 120)
    assert stub.pdu_ids() == [str(i) for i in range(120)]
    # The transaction the first sender began is the second's first, unchanged.
    assert stub.bodies[len(stub.bodies) - len(stub.accepted)] == begun
    assert len({txn_id for txn_id, _ in stub.bodies}) == len(stub.accepted)


async def test_a_transaction_cut_off_mid_request_is_resent_with_its_id_and_contents(
    setup: Setup,
) -> None:
    """The process sending a transaction dies with the request in flight: the one that
    takes the destination over sends the same txnId with the same body, so the peer can
    recognise the retry; what was queued meanwhile goes in later transactions."""
    stub, hs = setup.stub, setup.hs
    async with hs.db.pool.connection() as conn:
        for event_id in setup.event_ids[:30]:
            await federation_outbox.enqueue_pdus(conn, [stub.name], event_id)
        await federation_outbox.enqueue_edu(conn, stub.name, '{"edu_type": "m.t", "content": {}}')
    stub.hang = True
    first = setup.sender()
    await first.start()
    await wait_for(lambda: len(stub.bodies) == 1)
    await first.close()  # the connection drops with no answer
    cut_id, cut_body = stub.bodies[0]
    assert (len(cut_body["pdus"]), len(cut_body["edus"])) == (30, 1)

    stub.hang = False
    async with hs.db.pool.connection() as conn:
        for event_id in setup.event_ids[30:40]:
            await federation_outbox.enqueue_pdus(conn, [stub.name], event_id)
    second = setup.sender()
    await second.start()
    await wait_for(lambda: len(stub.pdu_ids()) == 40)
    assert stub.bodies[1] == (cut_id, cut_body)
    assert stub.pdu_ids() == [str(i) for i in range(40)]
    assert stub.bodies[2][0] != cut_id

    async def recorded() -> Any:
        # The stub has the body before the sender hears the answer and forgets it.
        async with hs.db.pool.connection() as conn:
            return await federation_outbox.recorded_transaction(conn, stub.name)

    await wait_for_async(recorded, None)


async def test_contact_ends_the_backoff(setup: Setup) -> None:
    stub = setup.stub
    stub.failures = 1
    sender = setup.sender(min_backoff_s=3600)
    await sender.start()
    await sender.send_pdu([stub.name], setup.event_ids[0])
    await wait_for(lambda: len(stub.attempts) == 1)
    await asyncio.sleep(0.2)
    assert stub.accepted == []
    sender.on_contact(stub.name)  # e.g. it just sent us a request
    await wait_for(lambda: stub.pdu_ids() == ["0"])


async def test_one_sender_per_destination_across_processes(setup: Setup) -> None:
    """Two senders on one database (as two worker processes would be) never send to the
    same destination at once, and nothing is sent twice."""
    stub = setup.stub
    stub.delay = 0.05
    one, two = setup.sender(), setup.sender()
    await one.start()
    await two.start()
    for i, event_id in enumerate(setup.event_ids):
        await (one if i % 2 else two).send_pdu([stub.name], event_id)
    await wait_for(lambda: len(stub.pdu_ids()) >= 120)
    await asyncio.sleep(0.2)
    assert sorted(stub.pdu_ids(), key=int) == [str(i) for i in range(120)]
    assert stub.max_in_flight == 1


async def test_a_fan_out_leaves_a_destination_another_process_holds(setup: Setup) -> None:
    """Destinations woken together take their locks together: the one another process
    holds is not sent to by this one, the others are, and it is once that process dies."""
    stubs = [setup.stub, *[await setup.add_stub() for _ in range(3)]]
    held = stubs[1]
    other = await psycopg.AsyncConnection.connect(setup.hs.db.conninfo, autocommit=True)
    try:
        assert await federation_outbox.try_lock_destinations(other, [held.name]) == {held.name}
        sender = setup.sender(sweep_interval_s=0.2)
        await sender.start()
        for event_id in setup.event_ids[:3]:
            await sender.send_pdu([s.name for s in stubs], event_id)
        free = [s for s in stubs if s is not held]
        await wait_for(lambda: all(s.pdu_ids() == ["0", "1", "2"] for s in free))
        await asyncio.sleep(0.5)  # sweeps come and go
        assert held.attempts == []
    finally:
        await other.close()  # the other process dies, and its locks with it
    await wait_for(lambda: held.pdu_ids() == ["0", "1", "2"])


async def test_a_fan_out_cut_off_mid_batch_resends_each_transaction_as_recorded(
    setup: Setup,
) -> None:
    """Transactions recorded together for many destinations, some cut off mid-request
    when the process dies: the next sender resends exactly those (id and body), while
    the destinations that answered get nothing twice."""
    stubs = [setup.stub, *[await setup.add_stub() for _ in range(3)]]
    async with setup.hs.db.pool.connection() as conn:
        for event_id in setup.event_ids[:5]:
            await federation_outbox.enqueue_pdus(conn, [s.name for s in stubs], event_id)
    hung, answered = stubs[:2], stubs[2:]
    for stub in hung:
        stub.hang = True
    first = setup.sender()
    await first.start()
    await wait_for(lambda: all(len(s.bodies) == 1 for s in hung))
    await wait_for(lambda: all(s.pdu_ids() == ["0", "1", "2", "3", "4"] for s in answered))
    await first.close()
    cut = [s.bodies[0] for s in hung]
    assert len({txn_id for txn_id, _ in cut}) == 2

    for stub in hung:
        stub.hang = False
    second = setup.sender()
    await second.start()
    await wait_for(lambda: all(s.pdu_ids() == ["0", "1", "2", "3", "4"] for s in hung))
    assert [s.bodies for s in hung] == [[c, c] for c in cut]
    assert all(len(s.bodies) == 1 for s in answered)
