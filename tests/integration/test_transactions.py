"""Client transaction ids: a retransmission (same access token, same request path, same
txnId) gets the first response; any other request is a new one, whatever its txnId."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, login_user, register_user

Client = TestClient[Any, Any]


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    return await homeserver_client(open_registration=True, **{"rate_limits.enabled": False})


async def put(user: RoomUser, path: str, body: dict[str, Any]) -> str:
    return str((await user.ok("PUT", path, body))["event_id"])


async def test_txn_id_is_scoped_to_the_request_path_and_the_device(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    first = await alice.create_room()
    second = await alice.create_room()
    hello = {"msgtype": "m.text", "body": "hello"}

    sent = await put(alice, f"/rooms/{first}/send/m.room.message/x", hello)
    assert await put(alice, f"/rooms/{first}/send/m.room.message/x", hello) == sent
    elsewhere = await put(alice, f"/rooms/{second}/send/m.room.message/x", hello)
    assert elsewhere != sent
    status, event = await alice.get(f"/v3/rooms/{second}/event/{elsewhere}")
    assert (status, event["room_id"]) == (200, second)

    react = {"m.relates_to": {"rel_type": "m.annotation", "event_id": sent, "key": "👍"}}
    reaction = await put(alice, f"/rooms/{first}/send/m.reaction/x", react)
    assert reaction != sent
    status, event = await alice.get(f"/v3/rooms/{first}/event/{reaction}")
    assert (status, event["type"]) == (200, "m.reaction")

    redaction = await put(alice, f"/rooms/{first}/redact/{sent}/x", {})
    assert redaction not in (sent, reaction)
    assert await put(alice, f"/rooms/{first}/redact/{sent}/x", {}) == redaction
    status, event = await alice.get(f"/v3/rooms/{first}/event/{sent}")
    assert status == 200 and event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction


async def test_txn_id_of_another_access_token_is_a_new_request(client: Client) -> None:
    account = await register_user(client, "bob")
    bob = RoomUser(client, account["user_id"], account["access_token"])
    other = RoomUser(client, bob.user_id, (await login_user(client, "bob"))["access_token"])
    room = await bob.create_room()
    hello = {"msgtype": "m.text", "body": "hello"}
    sent = await put(bob, f"/rooms/{room}/send/m.room.message/x", hello)
    again = await put(other, f"/rooms/{room}/send/m.room.message/x", hello)
    assert again != sent
    status, page = await bob.get(f"/v3/rooms/{room}/messages", dir="b")
    assert status == 200
    ids = [e["event_id"] for e in page["chunk"]]
    assert sent in ids and again in ids


async def test_retransmissions_within_and_across_batches_of_a_busy_room(client: Client) -> None:
    """Concurrent sends into one room are written in batches: a txn id repeated in the
    same batch, or already used by an earlier one, still gets the first event."""
    alice = await RoomUser.make(client, "carol")
    room = await alice.create_room()
    path = f"/rooms/{room}/send/m.room.message"

    def body(n: int) -> dict[str, Any]:
        return {"msgtype": "m.text", "body": f"message {n}"}

    earlier = {n: await put(alice, f"{path}/t{n}", body(n)) for n in range(5)}
    # Old ids again, new ids twice each, all at once: they queue behind each other.
    requests = [(n, put(alice, f"{path}/t{n}", body(n))) for n in range(15) for _ in range(2)]
    answers = await asyncio.gather(*(request for _, request in requests))
    by_txn: dict[int, set[str]] = {}
    for (n, _), event_id in zip(requests, answers, strict=True):
        by_txn.setdefault(n, set()).add(event_id)
    assert all(len(ids) == 1 for ids in by_txn.values())
    assert all(by_txn[n] == {earlier[n]} for n in earlier)

    status, page = await alice.get(f"/v3/rooms/{room}/messages", dir="b", limit="100")
    assert status == 200
    bodies = [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
    assert sorted(bodies) == sorted(f"message {n}" for n in range(15))
    ids = {e["event_id"] for e in page["chunk"]}
    assert set().union(*by_txn.values()) <= ids
