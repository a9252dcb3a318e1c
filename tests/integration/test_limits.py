"""Size limits, and their refusals: events past the spec's PDU limits (whatever
endpoint builds them), account data and filters past theirs."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

PDU_LIMIT = 65536


async def test_send_and_state_refuse_content_past_the_pdu_limit(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    # Content alone over the limit, and content under it whose event (hashes,
    # signatures, references) is over it: other servers would refuse either.
    for n, size in enumerate((PDU_LIMIT + 1, PDU_LIMIT - 200)):
        content = {"body": "x" * size}
        for path in (f"/send/m.room.message/big{n}", f"/state/m.x/big{n}"):
            status, body = await call(
                open_client, "PUT", f"/v3/rooms/{room}{path}", content, headers=alice.headers
            )
            assert status == 413 and body["errcode"] == "M_TOO_LARGE", (path, size, body)
    status, state = await alice.get(f"/v3/rooms/{room}/state")
    assert not [e for e in state if e["type"] == "m.x"]
    # Comfortably under the limit goes through.
    await alice.send(room, {"body": "x" * (PDU_LIMIT - 2000)})


async def test_send_and_state_refuse_types_and_state_keys_over_255_bytes(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    room = await alice.create_room()
    long_type, long_key = "t" * 256, "é" * 128  # 256 bytes in UTF-8
    for path in (
        f"/send/{long_type}/t1",
        f"/state/{long_type}/",
        f"/state/m.x/{long_key}",
    ):
        status, body = await call(
            open_client, "PUT", f"/v3/rooms/{room}{path}", {}, headers=alice.headers
        )
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", (path, body)
    # 255 bytes are allowed.
    await alice.send(room, {}, type="t" * 255)
    await alice.state(room, "m.x", {"ok": True}, key="k" * 255)


async def test_create_room_refuses_events_past_the_limits(
    open_client: TestClient[Any, Any],
) -> None:
    """createRoom builds its events from client fields: the same limits apply there."""
    alice = await RoomUser.make(open_client, "alice")
    big = "x" * PDU_LIMIT
    for fields, expected in (
        ({"initial_state": [{"type": "t" * 256, "state_key": "", "content": {}}]}, 400),
        ({"initial_state": [{"type": "m.x", "state_key": "k" * 256, "content": {}}]}, 400),
        ({"initial_state": [{"type": "m.x", "state_key": "", "content": {"b": big}}]}, 413),
        ({"name": big}, 413),
        ({"topic": big}, 413),
        ({"creation_content": {"b": big}}, 413),
        ({"power_level_content_override": {"b": big}}, 413),
    ):
        status, body = await call(
            open_client, "POST", "/v3/createRoom", fields, headers=alice.headers
        )
        assert status == expected, (list(fields), body)
        assert body["errcode"] == ("M_TOO_LARGE" if expected == 413 else "M_BAD_JSON")
    status, rooms = await alice.get("/v3/joined_rooms")
    assert rooms["joined_rooms"] == []


async def test_membership_reason_past_the_pdu_limit(open_client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(open_client, "alice")
    bob = await RoomUser.make(open_client, "bob")
    room = await alice.create_room()
    status, body = await call(
        open_client,
        "POST",
        f"/v3/rooms/{room}/invite",
        {"user_id": bob.user_id, "reason": "x" * PDU_LIMIT},
        headers=alice.headers,
    )
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"
    status, _ = await alice.get(f"/v3/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert status == 404


async def test_account_data_and_tags_are_limited_to_one_mebibyte(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    me = alice.user_id
    room = await alice.create_room()
    too_big = {"x": "x" * (1024 * 1024)}
    for path, content in (
        (f"/v3/user/{me}/account_data/m.big", too_big),
        (f"/v3/user/{me}/rooms/{room}/account_data/m.big", too_big),
        (f"/v3/user/{me}/rooms/{room}/tags/u.big", too_big),
        (f"/v3/user/{me}/rooms/{room}/account_data/m.tag", {"tags": {"u.big": too_big}}),
    ):
        status, body = await call(open_client, "PUT", path, content, headers=alice.headers)
        assert status == 413 and body["errcode"] == "M_TOO_LARGE", (path, body)
    status, _ = await alice.get(f"/v3/user/{me}/account_data/m.big")
    assert status == 404
    # Just under the limit is stored and read back.
    fits = {"x": "x" * (1024 * 1024 - 100)}
    await alice.ok("PUT", f"/user/{me}/account_data/m.big", fits)
    status, body = await alice.get(f"/v3/user/{me}/account_data/m.big")
    assert status == 200 and body == fits


async def test_filters_are_limited_to_64_kibibytes(open_client: TestClient[Any, Any]) -> None:
    alice = await RoomUser.make(open_client, "alice")
    path = f"/v3/user/{alice.user_id}/filter"

    def filter_of(rooms: int) -> dict[str, Any]:
        return {"room": {"not_rooms": [f"!room{n:08d}:test.local" for n in range(rooms)]}}

    status, body = await call(open_client, "POST", path, filter_of(2600), headers=alice.headers)
    assert status == 413 and body["errcode"] == "M_TOO_LARGE", body
    status, body = await call(open_client, "POST", path, filter_of(2300), headers=alice.headers)
    assert status == 200, body
