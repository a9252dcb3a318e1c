"""A transaction's PDUs for a room taken in together: sent out of order, they are stored
in DAG order; a rejected one in the middle leaves the others accepted; the rooms of one
transaction are all handled; a waiting /sync wakes for them; each counts for push."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from federation.builder import build_event
from federation.room_versions import RoomVersion
from homeserver.storage.rooms import events as event_store
from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import Client, hs_of, peer, room_position


def message(
    client: Client,
    rv: RoomVersion,
    room_id: str,
    sender: str,
    prev: str,
    auth: list[str],
    **kw: Any,
) -> tuple[str, dict[str, Any]]:
    """(event id, PDU) of an event by `sender`, signed by its server."""
    hs = hs_of(client)
    event = build_event(
        rv,
        hs.signing_key,
        event_type=kw.pop("event_type", "m.room.message"),
        sender=sender,
        content=kw.pop("content", None) or {"msgtype": "m.text", "body": kw.pop("body", "")},
        prev_events=[prev],
        auth_events=auth,
        depth=kw.pop("depth"),
        origin_server_ts=int(time.time() * 1000),
        room_id=room_id,
        **kw,
    )
    return event.event_id, dict(event.pdu)


async def test_one_transaction_many_events_in_dag_order(
    homeserver_client: Callable[..., Any],
) -> None:
    a, b = await peer(homeserver_client), await peer(homeserver_client)
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    hs_a, hs_b = hs_of(a), hs_of(b)
    rooms = [await alice.create_room(preset="public_chat") for _ in range(2)]
    for room_id in rooms:
        await bob.ok("POST", f"/join/{room_id}?server_name={hs_a.server_name}")
    _, sync = await alice.get("/v3/sync", timeout="0")
    since = sync["next_batch"]

    rv, [tip], auth = await room_position(hs_a, rooms[0], bob.user_id)
    ids: list[str] = []
    pdus: list[dict[str, Any]] = []
    prev = tip
    for n in range(6):  # m0, m1, then a power grab bob may not make and m3, m4, m5
        kind: dict[str, Any] = {"body": f"m{n}"}
        if n == 2:
            kind = {
                "event_type": "m.room.power_levels",
                "state_key": "",
                "content": {"users": {bob.user_id: 100}},
            }
        event_id, pdu = message(b, rv, rooms[0], bob.user_id, prev, auth, depth=100 + n, **kind)
        ids.append(event_id)
        pdus.append(pdu)
        if n != 2:  # the rest of the stream goes on from m1, beside the refused event
            prev = event_id
    rv2, [tip2], auth2 = await room_position(hs_a, rooms[1], bob.user_id)
    other_id, other = message(b, rv2, rooms[1], bob.user_id, tip2, auth2, depth=50, body="other")

    waiting = asyncio.create_task(alice.get("/v3/sync", since=since, timeout="20000"))
    await asyncio.sleep(0.2)
    shuffled = [pdus[4], pdus[1], other, pdus[5], pdus[2], pdus[0], pdus[3]]
    txn = {"origin": hs_b.server_name, "origin_server_ts": 0, "pdus": shuffled}
    answer = await hs_b.remote_client.put_json(
        hs_a.server_name, "/_matrix/federation/v1/send/batch1", txn
    )
    results = answer["pdus"]
    assert "rejected" in results[ids[2]]["error"], results
    assert all(results[e] == {} for e in [*ids[:2], *ids[3:], other_id]), results

    # The 200 came after the commit: everything is readable at once, in DAG order.
    _, page = await alice.get(f"/v3/rooms/{rooms[0]}/messages", dir="b", limit="10")
    texts = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
    assert texts[:5] == ["m5", "m4", "m3", "m1", "m0"]
    async with hs_a.db.pool.connection() as conn:
        rows = await event_store.get_events(conn, [*ids, other_id])
    order = [rows[e].stream_ordering for e in ids if e != ids[2]]
    assert all(o is not None for o in order) and order == sorted(order)
    assert rows[ids[2]].rejected_reason and rows[ids[2]].stream_ordering is None
    assert rows[other_id].stream_ordering is not None
    _, pl = await alice.get(f"/v3/rooms/{rooms[0]}/state/m.room.power_levels/")
    assert bob.user_id not in pl.get("users", {})

    # The rooms commit in parallel: the long-poll wakes for whichever came first, and
    # the other is in that answer or the next (the 200 came after both commits).
    status, woken = await asyncio.wait_for(waiting, 10)
    assert status == 200
    seen = {r: bool(v["timeline"]["events"]) for r, v in woken["rooms"]["join"].items()}
    if not (seen.get(rooms[0]) and seen.get(rooms[1])):
        status, more = await alice.get("/v3/sync", since=woken["next_batch"], timeout="10000")
        assert status == 200
        seen.update((r, bool(v["timeline"]["events"])) for r, v in more["rooms"]["join"].items())
    assert seen.get(rooms[0]) and seen.get(rooms[1]), seen

    async def unread(room_id: str) -> int:
        _, body = await alice.get("/v3/sync", since=since, timeout="0")
        room = body["rooms"]["join"].get(room_id, {})
        return int(room.get("unread_notifications", {}).get("notification_count", 0))

    assert await unread(rooms[0]) == 5  # every accepted message went through push
    assert await unread(rooms[1]) == 1
