"""Delayed events (MSC4140): scheduled through the send endpoints, managed through the
unstable endpoints, fired by the server at their time."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.rooms import delayed_events
from tests.integration.conftest import RoomUser

UNSTABLE = "/unstable/org.matrix.msc4140/delayed_events"
DELAY = "org.matrix.msc4140.delay"
CALL_MEMBER = "org.matrix.msc3401.call.member"


async def _delayed(
    user: RoomUser, path: str, content: dict[str, Any], delay_ms: int
) -> tuple[int, Any]:
    resp = await user.client.put(
        f"/_matrix/client/v3{path}",
        json=content,
        headers=user.headers,
        params={DELAY: str(delay_ms)},
    )
    return resp.status, await resp.json()


async def _post(user: RoomUser, path: str, body: Any) -> tuple[int, Any]:
    resp = await user.client.post(f"/_matrix/client{path}", json=body, headers=user.headers)
    return resp.status, await resp.json()


async def _schedule_state(user: RoomUser, room_id: str, key: str, delay_ms: int) -> str:
    status, body = await _delayed(
        user, f"/rooms/{room_id}/state/{CALL_MEMBER}/{quote(key)}", {}, delay_ms
    )
    assert status == 200, body
    return str(body["delay_id"])


async def _member_content(user: RoomUser, room_id: str, key: str) -> Any:
    status, body = await user.get(f"/v3/rooms/{room_id}/state/{CALL_MEMBER}/{quote(key)}")
    assert status == 200, body
    return body


async def _until_left(user: RoomUser, room_id: str, key: str, within: float = 20.0) -> float:
    """Wait until the call member's state is empty; when that was seen (monotonic)."""
    deadline = time.monotonic() + within
    while await _member_content(user, room_id, key) != {}:
        assert time.monotonic() < deadline, "the delayed leave was not sent"
        await asyncio.sleep(0.1)
    return time.monotonic()


async def _joined_call(client: TestClient[Any, Any]) -> tuple[RoomUser, str, str]:
    alice = await RoomUser.make(client, "alice")
    # As Element creates rooms for calls: members may publish their call membership.
    room_id = await alice.create_room(power_level_content_override={"events": {CALL_MEMBER: 0}})
    key = f"_{alice.user_id}_TESTDEVICE"
    return alice, room_id, key


async def test_delayed_leave_fires_after_its_delay_and_restart_keeps_it(
    open_client: TestClient[Any, Any],
) -> None:
    alice, room_id, key = await _joined_call(open_client)
    # As MatrixRTC does: the delayed leave first, then the membership it undoes.
    delay_id = await _schedule_state(alice, room_id, key, 3000)
    await alice.state(room_id, CALL_MEMBER, {"application": "m.call"}, key)
    listed = (await alice.get(UNSTABLE))[1]["delayed_events"]
    assert [
        (e["delay_id"], e["room_id"], e["type"], e["state_key"], e["delay"]) for e in listed
    ] == [(delay_id, room_id, CALL_MEMBER, key, 3000)]
    assert listed[0]["content"] == {}
    # A heartbeat of restarts outlives the delay several times over.
    started = time.monotonic()
    for n in range(8):
        path = f"{UNSTABLE}/{delay_id}/restart" if n % 2 else f"{UNSTABLE}/{delay_id}"
        body = {} if n % 2 else {"action": "restart"}
        status, answer = await _post(alice, path, body)
        assert status == 200, answer
        await asyncio.sleep(0.5)
    assert time.monotonic() - started > 3.0
    assert await _member_content(alice, room_id, key) == {"application": "m.call"}
    last_restart = time.monotonic()
    left_at = await _until_left(alice, room_id, key)
    assert left_at - last_restart > 2.0, "sent before its delay ran out"
    # The row goes in the transaction that sent the event, a moment after the event.
    for _ in range(50):
        if (await alice.get(UNSTABLE))[1]["delayed_events"] == []:
            break
        await asyncio.sleep(0.1)
    assert (await alice.get(UNSTABLE))[1]["delayed_events"] == []
    status, answer = await _post(alice, f"{UNSTABLE}/{delay_id}/restart", {})
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_cancel_and_send_now(open_client: TestClient[Any, Any]) -> None:
    alice, room_id, key = await _joined_call(open_client)
    await alice.state(room_id, CALL_MEMBER, {"application": "m.call"}, key)
    cancelled = await _schedule_state(alice, room_id, key, 1000)
    # The delay id alone is enough, as for a service the client handed it to.
    resp = await open_client.post(f"/_matrix/client{UNSTABLE}/{cancelled}/cancel")
    assert resp.status == 200, await resp.text()
    resp = await open_client.post(f"/_matrix/client{UNSTABLE}/{cancelled}/restart")
    assert resp.status == 404
    await asyncio.sleep(2.5)
    assert await _member_content(alice, room_id, key) == {"application": "m.call"}
    # A message sent now rather than in an hour; its retransmission is the same one.
    for _ in range(2):
        status, body = await _delayed(
            alice,
            f"/rooms/{room_id}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "later"},
            3_600_000,
        )
        assert status == 200, body
    assert [e["delay_id"] for e in (await alice.get(UNSTABLE))[1]["delayed_events"]] == [
        body["delay_id"]
    ]
    status, _ = await _post(alice, f"{UNSTABLE}/{body['delay_id']}", {"action": "send"})
    assert status == 200
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="5")
    assert [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"] == [
        "later"
    ]


async def test_others_cannot_touch_them_and_state_changes_drop_them(
    open_client: TestClient[Any, Any],
) -> None:
    alice, room_id, key = await _joined_call(open_client)
    bob = await RoomUser.make(open_client, "bob")
    await alice.invite(room_id, bob.user_id)
    await bob.join(room_id)
    await _schedule_state(alice, room_id, key, 60_000)
    mine = (await alice.get(UNSTABLE))[1]["delayed_events"][0]["delay_id"]
    status, _ = await _post(bob, f"{UNSTABLE}/{mine}/cancel", {})
    assert status == 404
    assert (await bob.get(UNSTABLE))[1]["delayed_events"] == []
    # Someone else setting the key drops the delayed value; one's own change does not.
    await _schedule_state(bob, room_id, "shared", 60_000)
    bob_key = f"_{bob.user_id}_TESTDEVICE"
    await _schedule_state(bob, room_id, bob_key, 60_000)
    await alice.state(room_id, CALL_MEMBER, {"by": "alice"}, "shared")
    await bob.state(room_id, CALL_MEMBER, {"application": "m.call"}, bob_key)
    assert [e["state_key"] for e in (await bob.get(UNSTABLE))[1]["delayed_events"]] == [bob_key]
    # Leaving the room takes one's delayed events along; so does closing one's account.
    await alice.leave(room_id)
    assert (await alice.get(UNSTABLE))[1]["delayed_events"] == []
    await open_client.server.app[HOMESERVER].deactivation.deactivate(bob.user_id, erase=False)
    async with open_client.server.app[HOMESERVER].db.pool.connection() as conn:
        assert await delayed_events.for_user(conn, bob.user_id) == []


async def test_limits_versions_and_capabilities(open_client: TestClient[Any, Any]) -> None:
    alice, room_id, key = await _joined_call(open_client)
    status, versions = await alice.get("/versions")
    assert versions["unstable_features"]["org.matrix.msc4140"] is True
    _, caps = await alice.get("/v3/capabilities")
    limit = caps["capabilities"]["org.matrix.msc4140"]["max_delay"]
    assert limit >= 60_000
    status, body = await _delayed(
        alice, f"/rooms/{room_id}/state/{CALL_MEMBER}/{key}", {}, limit + 1
    )
    assert status == 400
    # The shape matrix-js-sdk reads to shorten its delay and try again.
    assert body["errcode"] == "M_UNKNOWN"
    assert body["org.matrix.msc4140.errcode"] == "M_MAX_DELAY_EXCEEDED"
    assert body["org.matrix.msc4140.max_delay"] == limit
    status, body = await _delayed(alice, f"/rooms/{room_id}/state/{CALL_MEMBER}/{key}", {}, -5)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    # Content that could never be sent is refused when scheduled, not when due.
    status, body = await _delayed(
        alice, f"/rooms/{room_id}/state/{CALL_MEMBER}/{key}", {"n": 1.5}, 1000
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await _post(alice, f"{UNSTABLE}/nothing", {"action": "explode"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await _post(alice, f"{UNSTABLE}/nothing", {})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_refused_when_due_is_dropped_and_others_still_fire(
    open_client: TestClient[Any, Any],
) -> None:
    alice, room_id, _ = await _joined_call(open_client)
    bob = await RoomUser.make(open_client, "bob")
    await alice.invite(room_id, bob.user_id)
    await bob.join(room_id)
    # Bob may not rename the room: scheduling is allowed, sending when due is not.
    status, _ = await _delayed(bob, f"/rooms/{room_id}/state/m.room.name/", {"name": "x"}, 300)
    assert status == 200
    status, _ = await _delayed(
        bob, f"/rooms/{room_id}/send/m.room.message/m1", {"msgtype": "m.text", "body": "hi"}, 600
    )
    assert status == 200
    for _ in range(100):
        if (await bob.get(UNSTABLE))[1]["delayed_events"] == []:
            break
        await asyncio.sleep(0.1)
    assert (await bob.get(UNSTABLE))[1]["delayed_events"] == []
    status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="10")
    assert [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"] == ["hi"]
    status, _ = await bob.get(f"/v3/rooms/{room_id}/state/m.room.name")
    assert status == 404
