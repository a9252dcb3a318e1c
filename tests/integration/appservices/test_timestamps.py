"""Timestamp massaging: an application service sending as one of its users may set the
event's origin_server_ts with `?ts=` (bridges importing history); nobody else may."""

from __future__ import annotations

from tests.integration.appservices.bridge import Client, as_call, register_bridged
from tests.integration.conftest import RoomUser

PAST = 1_500_000_000_000


async def test_ts_is_honoured_for_application_services_only(server: Client) -> None:
    alice = await RoomUser.make(server, "alice")
    ghost = await register_bridged(server, "bridge_ghost")
    room_id = await alice.create_room(
        preset="public_chat", power_level_content_override={"users": {ghost: 50}}
    )
    status, body = await as_call(server, "POST", f"/v3/rooms/{room_id}/join", user_id=ghost)
    assert status == 200, body

    hello = {"msgtype": "m.text", "body": "from the past"}
    status, sent = await as_call(
        server,
        "PUT",
        f"/v3/rooms/{room_id}/send/m.room.message/t1",
        hello,
        user_id=ghost,
        ts=str(PAST),
    )
    assert status == 200, sent
    status, topic = await as_call(
        server,
        "PUT",
        f"/v3/rooms/{room_id}/state/org.example.bridged",
        {"v": 1},
        user_id=ghost,
        ts=str(PAST + 1),
    )
    assert status == 200, topic
    resp = await server.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t2",
        params={"ts": str(PAST)},
        json=hello,
        headers=alice.headers,
    )
    assert resp.status == 200
    by_alice = (await resp.json())["event_id"]

    async def ts_of(event_id: str) -> int:
        status, event = await alice.get(f"/v3/rooms/{room_id}/event/{event_id}")
        assert status == 200, event
        return int(event["origin_server_ts"])

    assert await ts_of(sent["event_id"]) == PAST
    assert await ts_of(topic["event_id"]) == PAST + 1
    assert await ts_of(by_alice) > PAST + 10**9

    status, body = await as_call(
        server,
        "PUT",
        f"/v3/rooms/{room_id}/send/m.room.message/t3",
        hello,
        user_id=ghost,
        ts="yesterday",
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
