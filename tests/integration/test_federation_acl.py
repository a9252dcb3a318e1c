"""Server ACLs between two of our servers on loopback. Server A is named "localhost:PORT"
and server B "127.0.0.1:PORT", so that an ACL can tell them apart (ports are not
considered) and B is an IP literal.

What the spec asks: a denied server's requests about the room answer 403 M_FORBIDDEN,
its PDUs in /send are refused one by one, its typing and receipt EDUs are ignored, and
the room's events keep going to it while it is resident; allowing it again restores
everything. And what users of Synapse expect: an ACL that would shut out the sender's
own server is refused, and ACL events cannot be redacted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed, quote_segment
from homeserver.storage.ephemeral import receipts
from homeserver.storage.rooms import events as event_store
from tests.integration.conftest import RoomUser
from tests.integration.peers import PEER_CONFIG, free_port
from tests.integration.test_federation_rooms import eventually, hs_of, membership, sees

Client = TestClient[Any, Any]
ACL = "m.room.server_acl"
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


async def named_peer(homeserver_client: Callable[..., Any], host: str) -> Client:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"{host}:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    return client


@pytest.fixture
async def pair(homeserver_client: Callable[..., Any]) -> tuple[RoomUser, RoomUser, str]:
    """alice on A (localhost) in a public room she created; bob on B (127.0.0.1) joined."""
    a = await named_peer(homeserver_client, "localhost")
    b = await named_peer(homeserver_client, "127.0.0.1")
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    return alice, bob, room_id


async def refused(hs: Homeserver, method: str, destination: str, path: str, **kw: Any) -> str:
    """The errcode of a federation request from `hs` that must be answered 403."""
    with pytest.raises(RequestFailed) as failure:
        await hs.remote_client.request(method, destination, path, **kw)
    assert failure.value.status == 403, failure.value
    return str(failure.value.errcode)


async def transaction(hs: Homeserver, destination: str, pdus: list[Any], edus: list[Any]) -> Any:
    """A /send transaction from `hs`, built by hand so that its answer can be read."""
    body = {
        "origin": hs.server_name,
        "origin_server_ts": int(time.time() * 1000),
        "pdus": pdus,
        "edus": edus,
    }
    txn_id = f"acl-{time.monotonic_ns()}"
    return await hs.remote_client.put_json(destination, f"{V1}/send/{txn_id}", body)


async def stored_pdu(hs: Homeserver, event_id: str) -> dict[str, Any]:
    async with hs.db.pool.connection() as conn:
        row = (await event_store.get_events(conn, [event_id]))[event_id]
    pdu: dict[str, Any] = orjson.loads(row.json)
    pdu.pop("unsigned", None)
    return pdu


async def read_receipt_of(hs: Homeserver, room_id: str, user_id: str) -> str | None:
    async with hs.db.pool.connection() as conn:
        rows = await receipts.receipts_in_rooms(conn, [room_id], 0, 2**62, user_id, "m.read")
    return next((r.event_id for r in rows if r.user_id == user_id), None)


async def test_denied_server_is_refused_everywhere_until_allowed_again(
    pair: tuple[RoomUser, RoomUser, str],
) -> None:
    alice, bob, room_id = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    a_name = hs_a.server_name
    room = quote_segment(room_id)
    seen_id = await alice.say(room_id, "before the ACL")
    await eventually(lambda: sees(bob, room_id, "before the ACL"))
    # While B is allowed, its reads of the room are answered.
    state = await hs_b.remote_client.get_json(
        a_name, f"{V1}/state_ids/{room}", {"event_id": seen_id}
    )
    assert state["pdu_ids"]

    await alice.state(room_id, ACL, {"allow": ["*"], "deny": ["127.0.0.1"]})
    # Every room-scoped request of B's is refused with 403 M_FORBIDDEN.
    carol = f"@carol:{hs_b.server_name}"
    fake_id = "$" + "A" * 43
    checks: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{V1}/make_join/{room}/{quote_segment(carol)}", {"query": {"ver": "12"}}),
        ("GET", f"{V1}/make_leave/{room}/{quote_segment(bob.user_id)}", {}),
        ("GET", f"{V1}/make_knock/{room}/{quote_segment(carol)}", {"query": {"ver": "12"}}),
        ("PUT", f"{V2}/send_join/{room}/{fake_id}", {"content": {}}),
        ("PUT", f"{V2}/send_leave/{room}/{fake_id}", {"content": {}}),
        ("PUT", f"{V1}/send_knock/{room}/{fake_id}", {"content": {}}),
        ("PUT", f"{V2}/invite/{room}/{fake_id}", {"content": {}}),
        ("GET", f"{V1}/state_ids/{room}", {"query": {"event_id": seen_id}}),
        ("GET", f"{V1}/state/{room}", {"query": {"event_id": seen_id}}),
        ("GET", f"{V1}/event_auth/{room}/{quote_segment(seen_id)}", {}),
        ("GET", f"{V1}/backfill/{room}", {"query": {"v": seen_id, "limit": "5"}}),
        (
            "POST",
            f"{V1}/get_missing_events/{room}",
            {"content": {"earliest_events": [], "latest_events": [seen_id]}},
        ),
        ("GET", f"{V1}/event/{quote_segment(seen_id)}", {}),
    ]
    for method, path, kw in checks:
        assert await refused(hs_b, method, a_name, path, **kw) == "M_FORBIDDEN", path

    # bob's message reaches A in a transaction, and is refused on its own.
    said = await bob.say(room_id, "from a denied server")
    pdu = await stored_pdu(hs_b, said)
    typing = {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob.user_id}}
    typing["content"]["typing"] = True
    receipt = {
        "edu_type": "m.receipt",
        "content": {room_id: {"m.read": {bob.user_id: {"event_ids": [seen_id], "data": {}}}}},
    }
    answer = await transaction(hs_b, a_name, [pdu], [typing, receipt])
    assert "ACL" in answer["pdus"][said]["error"]
    status, _ = await alice.get(f"/v3/rooms/{room_id}/event/{said}")
    assert status == 404
    assert not await sees(alice, room_id, "from a denied server")
    assert bob.user_id not in hs_a.typing.typing_in(room_id)
    assert await read_receipt_of(hs_a, room_id, bob.user_id) is None

    # The spec: a denied server still resident keeps receiving the room's events.
    await alice.say(room_id, "still sent to B")
    await eventually(lambda: sees(bob, room_id, "still sent to B"))

    # Allowed again, the same transaction is taken, EDUs included.
    await alice.state(room_id, ACL, {"allow": ["*"]})
    answer = await transaction(hs_b, a_name, [pdu], [typing, receipt])
    assert answer["pdus"][said] == {}
    assert await sees(alice, room_id, "from a denied server")
    assert bob.user_id in hs_a.typing.typing_in(room_id)
    assert await read_receipt_of(hs_a, room_id, bob.user_id) == seen_id
    await hs_b.remote_client.get_json(a_name, f"{V1}/event/{quote_segment(seen_id)}")
    await bob.say(room_id, "allowed again")
    await eventually(lambda: sees(alice, room_id, "allowed again"))


async def test_denied_server_cannot_join_until_allowed(
    homeserver_client: Callable[..., Any],
) -> None:
    a = await named_peer(homeserver_client, "localhost")
    b = await named_peer(homeserver_client, "127.0.0.1")
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    a_name = hs_of(a).server_name
    room_id = await alice.create_room(
        preset="public_chat",
        initial_state=[{"type": ACL, "state_key": "", "content": {"allow": ["localhost"]}}],
    )
    resp = await bob.client.post(
        f"/_matrix/client/v3/join/{room_id}?server_name={a_name}", headers=bob.headers, json={}
    )
    assert resp.status != 200, await resp.text()
    assert await membership(alice, room_id, bob.user_id) is None

    await alice.state(room_id, ACL, {"allow": ["localhost", "127.0.0.?"]})
    await bob.ok("POST", f"/join/{room_id}?server_name={a_name}")
    assert await membership(alice, room_id, bob.user_id) == "join"


async def test_ip_literal_servers_are_denied_when_the_acl_says_so(
    pair: tuple[RoomUser, RoomUser, str],
) -> None:
    alice, bob, room_id = pair
    hs_a, hs_b = hs_of(alice.client), hs_of(bob.client)
    room = quote_segment(room_id)
    carol = quote_segment(f"@carol:{hs_b.server_name}")
    path = f"{V1}/make_join/{room}/{carol}"
    # Allowed by `*` while IP literals are allowed (the default) ...
    await alice.state(room_id, ACL, {"allow": ["*"]})
    template = await hs_b.remote_client.get_json(hs_a.server_name, path, {"ver": "12"})
    assert template["event"]["state_key"] == f"@carol:{hs_b.server_name}"
    # ... denied, `*` notwithstanding, once they are not; a DNS name (A) is unaffected.
    await alice.state(room_id, ACL, {"allow": ["*"], "allow_ip_literals": False})
    errcode = await refused(hs_b, "GET", hs_a.server_name, path, query={"ver": "12"})
    assert errcode == "M_FORBIDDEN"
    await alice.say(room_id, "A still speaks")


async def test_an_acl_denying_our_own_server_is_refused(
    pair: tuple[RoomUser, RoomUser, str],
) -> None:
    alice, _, room_id = pair
    hs_a = hs_of(alice.client)
    for content in (
        {"allow": ["127.0.0.1"]},
        {"allow": ["*"], "deny": ["LOCALHOST"]},  # globs ignore case
        {"deny": ["evil.example"]},  # no allow: every server denied
        {},
    ):
        resp = await alice.client.put(
            f"/_matrix/client/v3/rooms/{room_id}/state/{ACL}/",
            headers=alice.headers,
            json=content,
        )
        assert resp.status == 400, content
        assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    status, _ = await alice.get(f"/v3/rooms/{room_id}/state/{ACL}/")
    assert status == 404  # nothing was sent

    resp = await alice.client.post(
        "/_matrix/client/v3/createRoom",
        headers=alice.headers,
        json={"initial_state": [{"type": ACL, "state_key": "", "content": {"allow": ["x.org"]}}]},
    )
    assert resp.status == 400
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"

    # An ACL that lets us in is sent, and cannot be redacted away.
    acl_id = await alice.state(room_id, ACL, {"allow": ["*"], "deny": ["evil.example"]})
    resp = await alice.client.put(
        f"/_matrix/client/v3/rooms/{room_id}/redact/{acl_id}/r1",
        headers=alice.headers,
        json={},
    )
    assert resp.status == 403
    status, content = await alice.get(f"/v3/rooms/{room_id}/state/{ACL}/")
    assert status == 200 and content["deny"] == ["evil.example"]
    assert hs_a.server_name.startswith("localhost:")
