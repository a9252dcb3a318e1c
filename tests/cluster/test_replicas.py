"""`database.replicas`: history pages and `/members?at=` are read on a streaming
replica (made with pg_basebackup) once it has replayed the position of the client's
token; the public room list, `/context`, a client's read of one event, the federation
reads (an event, the state and auth chain at it, backfill, missing events, the event
nearest a time) and media metadata once it is less than 2 s behind and its answer is
settled; on the primary while it is not (replay paused) or when it is gone. The answers
are right either way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.remote.reads import SETTLED_AGE_MS
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core import migrations
from homeserver.storage.core.pool import Database
from homeserver.storage.core.replicas import Replica
from tests.integration.conftest import RoomUser, make_config
from tests.integration.own_postgres import DebianCluster, DebianStandby, debian_available

CATCH_UP_S = 15.0


@pytest.fixture
async def primary_and_replica(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[Any, Any], DebianStandby]]:
    if not debian_available():
        pytest.skip("needs the Debian PostgreSQL binaries")
    primary = DebianCluster()
    try:
        migrations.upgrade(primary.conninfo)
        standby = DebianStandby(primary)
        config = make_config(
            tmp_path / "hs",
            open_registration=True,
            **{"rate_limits.enabled": False, "database.replicas": [standby.conninfo]},
        )
        db = Database(primary.conninfo, size=4)
        await db.open()
        hs = build_homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_file)
        )
        await hs.start()
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
        await client.start_server()
        try:
            yield client, standby
        finally:
            await client.close()
            await hs.close()
            await db.close()
    finally:
        primary.destroy()


def _replica(client: TestClient[Any, Any]) -> Replica:
    return client.server.app[HOMESERVER].replicas.replicas[0]


async def _latest_token(alice: RoomUser, room_id: str) -> str:
    """A token at the room's newest event (read on the primary: no `from`)."""
    _, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="1")
    return str(page["start"])


async def _page(alice: RoomUser, room_id: str, token: str) -> list[str]:
    status, page = await alice.get(
        f"/v3/rooms/{room_id}/messages", dir="b", limit="50", **{"from": token}
    )
    assert status == 200, page
    return [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]


async def _public_rooms(alice: RoomUser) -> list[str]:
    status, body = await alice.get("/v3/publicRooms")
    assert status == 200, body
    return [room["room_id"] for room in body["chunk"]]


async def _context(alice: RoomUser, room_id: str, event_id: str) -> tuple[list[str], str]:
    status, body = await alice.get(f"/v3/rooms/{room_id}/context/{event_id}", limit="2")
    assert status == 200, body
    around = [*reversed(body["events_before"]), body["event"], *body["events_after"]]
    return [e["content"].get("body") for e in around], body["event"]["content"]["body"]


async def _member_names(alice: RoomUser, room_id: str, at: str) -> list[str | None]:
    status, body = await alice.get(f"/v3/rooms/{room_id}/members", at=at)
    assert status == 200, body
    return [e["content"].get("displayname") for e in body["chunk"]]


async def _served_bodies(reads: Any, room_id: str, event_id: str) -> tuple[str, int]:
    """What a peer is served: the event's body, and how many state events precede it."""
    pdu = (await reads.event("peer.example", event_id))["pdus"][0]
    state_ids, _ = await reads.state_ids("peer.example", room_id, event_id)
    return pdu["content"]["body"], len(state_ids)


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + CATCH_UP_S
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_history_is_read_on_a_replica_that_has_caught_up_only(
    primary_and_replica: tuple[TestClient[Any, Any], DebianStandby],
) -> None:
    client, standby = primary_and_replica
    replica = _replica(client)
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room()
    readable = {"history_visibility": "world_readable"}
    open_room = await alice.create_room(
        initial_state=[{"type": "m.room.history_visibility", "state_key": "", "content": readable}]
    )
    w0 = await alice.say(open_room, "w0")
    sent = [await alice.say(room_id, f"m{n}") for n in range(3)]
    token = await _latest_token(alice, room_id)
    stream = int(token.rsplit("_", 1)[1])
    await _until(lambda: replica.positions.get("events", -1) >= stream, "replica caught up")

    reads = replica.reads
    assert await _page(alice, room_id, token) == ["m2", "m1", "m0"]
    assert replica.reads == reads + 1, "read on the replica"
    # The public room list has no position: a replica less than 2 s behind answers it.
    listed = await alice.create_room(visibility="public", name="listed")
    # Replayed there (a replica recent enough may still lack the newest room).
    listed_at = int((await _latest_token(alice, listed)).rsplit("_", 1)[1])
    await _until(lambda: replica.positions.get("events", -1) >= listed_at, "room replayed")
    await _until(lambda: time.monotonic() - replica.replayed_at < 1.0, "replica recent")
    assert listed in await _public_rooms(alice)
    assert replica.reads == reads + 2
    # So does /context, which has no position either.
    assert await _context(alice, room_id, sent[1]) == (["m0", "m1", "m2"], "m1")
    assert replica.reads == reads + 3
    # And the members at the client's token.
    assert await _member_names(alice, room_id, token) == [None]
    assert replica.reads == reads + 4
    # Federation reads of an event and the state at it (history, asked with no position).
    peer_reads = client.server.app[HOMESERVER].reads
    assert await _served_bodies(peer_reads, open_room, w0) == ("w0", 6)
    assert replica.reads == reads + 6

    # Replay paused: newer messages are not there, so their page is read on the primary.
    with psycopg.connect(standby.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    sent += [await alice.say(room_id, f"m{n}") for n in range(3, 5)]
    w1 = await alice.say(open_room, "w1")
    member = {"membership": "join", "displayname": "Alice"}
    await alice.state(room_id, "m.room.member", member, key=alice.user_id)
    # Within 2 s of its last replay the replica is still "recent" but lacks m3: the
    # primary answers /context instead of a 404.
    assert (await _context(alice, room_id, sent[3]))[1] == "m3"
    later = await alice.create_room(visibility="public", name="later")
    token = await _latest_token(alice, room_id)
    await asyncio.sleep(2.5)  # checks that must not move the replica past the pause
    reads = replica.reads
    assert await _page(alice, room_id, token) == ["m4", "m3", "m2", "m1", "m0"]
    assert later in await _public_rooms(alice)
    assert await _context(alice, room_id, sent[3]) == (["m2", "m3", "m4"], "m3")
    assert await _member_names(alice, room_id, token) == ["Alice"]
    assert await _served_bodies(peer_reads, open_room, w1) == ("w1", 6)
    assert replica.reads == reads, "a paused replica is avoided"

    with psycopg.connect(standby.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    stream = int(token.rsplit("_", 1)[1])
    await _until(lambda: replica.positions.get("events", -1) >= stream, "replay resumed")
    assert await _page(alice, room_id, token) == ["m4", "m3", "m2", "m1", "m0"]
    assert replica.reads == reads + 1

    # Gone: out of rotation, and the pages still right.
    await asyncio.to_thread(standby.stop)
    await _until(lambda: not replica.healthy, "a dead replica leaves the rotation")
    assert await _page(alice, room_id, token) == ["m4", "m3", "m2", "m1", "m0"]


async def _upload(alice: RoomUser, data: bytes) -> str:
    resp = await alice.client.post(
        "/_matrix/media/v3/upload",
        data=data,
        headers={**alice.headers, "Content-Type": "text/plain"},
    )
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["content_uri"]).rsplit("/", 1)[1]


async def _download(alice: RoomUser, media_id: str) -> bytes:
    resp = await alice.client.get(
        f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=alice.headers
    )
    assert resp.status == 200, await resp.text()
    return await resp.read()


async def _backfilled(reads: Any, room_id: str, event_id: str) -> list[str]:
    """The message bodies a peer is sent when it backfills from `event_id`."""
    pdus = (await reads.backfill("peer.example", room_id, [event_id], 10))["pdus"]
    return [p["content"]["body"] for p in pdus if p["type"] == "m.room.message"]


async def _event(alice: RoomUser, room_id: str, event_id: str) -> tuple[str, int]:
    """A client's read of one event: its body and timestamp."""
    status, event = await alice.get(f"/v3/rooms/{room_id}/event/{event_id}")
    assert status == 200, event
    return event["content"]["body"], event["origin_server_ts"]


async def _peer_reads(reads: Any, room_id: str, event_id: str, earliest: list[str]) -> Any:
    """What a peer is served of an event: its body, how many state events precede it
    and are in their auth chain (/state), how many are in its own (/event_auth), and
    the messages missing between `earliest` and it."""
    peer = "peer.example"
    pdu = (await reads.event(peer, event_id))["pdus"][0]
    at = await reads.state(peer, room_id, event_id)
    auth = await reads.event_auth(peer, room_id, event_id)
    missing = await reads.missing_events(peer, room_id, earliest, [event_id], 10, 0)
    bodies = [e["content"]["body"] for e in missing["events"] if e["type"] == "m.room.message"]
    state = (len(at["pdus"]), len(at["auth_chain"]))
    return pdu["content"]["body"], state, len(auth["auth_chain"]), bodies


async def _nearest(reads: Any, room_id: str, ts: int, *, forward: bool) -> str:
    found = await reads.timestamp_to_event("peer.example", room_id, ts, forward=forward)
    return str(found["event_id"])


async def test_media_metadata_and_backfill_read_on_a_recent_replica_only(
    primary_and_replica: tuple[TestClient[Any, Any], DebianStandby],
) -> None:
    client, standby = primary_and_replica
    replica = _replica(client)
    peer_reads = client.server.app[HOMESERVER].reads
    alice = await RoomUser.make(client, "alice")
    readable = {"history_visibility": "world_readable"}
    room_id = await alice.create_room(
        initial_state=[{"type": "m.room.history_visibility", "state_key": "", "content": readable}]
    )
    w0, w1 = [await alice.say(room_id, f"w{n}") for n in range(2)]
    first = await _upload(alice, b"first file")
    written = time.monotonic()
    await _until(lambda: replica.replayed_at > written, "replica has the writes")

    reads = replica.reads
    assert await _download(alice, first) == b"first file"
    assert replica.reads == reads + 1, "media metadata read on the replica"
    assert await _backfilled(peer_reads, room_id, w1) == ["w1", "w0"]
    assert replica.reads == reads + 2, "backfill read on the replica"
    _, w0_ts = await _event(alice, room_id, w0)
    assert replica.reads == reads + 3, "a client's read of an event on the replica"
    assert await _peer_reads(peer_reads, room_id, w1, []) == ("w1", (6, 2), 2, ["w0"])
    assert replica.reads == reads + 7, "/event, /state, /event_auth, missing events"

    # Replay paused: what is older is still read on the replica while it is recent;
    # what is newer is read on the primary, at once (the replica recent but without
    # it: a 404 or a short answer there is not taken) and once it is 2 s behind.
    await _until(lambda: time.monotonic() - replica.replayed_at < 1.0, "replica recent")
    with psycopg.connect(standby.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    reads = replica.reads
    assert (await _event(alice, room_id, w1))[0] == "w1"
    assert replica.reads == reads + 1, "an older event still read on the paused replica"
    w2 = await alice.say(room_id, "w2")
    second = await _upload(alice, b"second file")
    assert await _download(alice, second) == b"second file"
    assert await _backfilled(peer_reads, room_id, w2) == ["w2", "w1", "w0"]
    assert (await _event(alice, room_id, w2))[0] == "w2"
    assert await _peer_reads(peer_reads, room_id, w2, [w0]) == ("w2", (6, 2), 2, ["w1"])
    now = int(time.time() * 1000)
    assert await _nearest(peer_reads, room_id, now, forward=False) == w2
    w2_ts = (await _event(alice, room_id, w2))[1]
    assert await _nearest(peer_reads, room_id, w2_ts, forward=True) == w2
    await asyncio.sleep(2.5)
    reads = replica.reads
    assert await _download(alice, first) == b"first file"
    assert await _download(alice, second) == b"second file"
    assert await _backfilled(peer_reads, room_id, w2) == ["w2", "w1", "w0"]
    assert (await _event(alice, room_id, w1))[0] == "w1"
    assert (await _event(alice, room_id, w2))[0] == "w2"
    assert await _peer_reads(peer_reads, room_id, w2, [w0]) == ("w2", (6, 2), 2, ["w1"])
    assert await _nearest(peer_reads, room_id, now, forward=False) == w2
    assert await _nearest(peer_reads, room_id, w0_ts, forward=True) == w0
    assert replica.reads == reads, "a paused replica is avoided"

    with psycopg.connect(standby.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    resumed = time.monotonic()
    await _until(lambda: replica.replayed_at > resumed, "replay resumed")
    assert await _download(alice, second) == b"second file"
    assert await _backfilled(peer_reads, room_id, w2) == ["w2", "w1", "w0"]
    assert replica.reads == reads + 2
    # The event nearest a time: on the replica once the time, or the event found going
    # forwards, is old enough that the replica cannot lack a nearer one.
    await asyncio.sleep(max(0.0, (w0_ts + SETTLED_AGE_MS) / 1000 + 0.2 - time.time()))
    assert await _nearest(peer_reads, room_id, w0_ts, forward=True) == w0
    assert await _nearest(peer_reads, room_id, w0_ts, forward=False) == w0
    assert replica.reads == reads + 4, "timestamp_to_event read on the replica"
