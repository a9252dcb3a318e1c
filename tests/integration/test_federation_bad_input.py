"""Federation bodies PostgreSQL or our encoders cannot hold (U+0000 outside event
content, nesting past the limit) are refused at the edge with 400 M_BAD_JSON, on every
endpoint with a body, in signed requests between two of our servers; never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.services.core.stored_json import MAX_DEPTH
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import eventually, hs_of, peer

Client = TestClient[Any, Any]
NUL = "\x00"
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def requests(b: Homeserver, bad: Any) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every federation endpoint that takes a body, with `bad`
    (a string holding NUL, or a value nested too deep) where the endpoint reads an id."""
    room = f"!room:{b.server_name}"
    event = "$event"
    pdu = {"type": "m.room.member", "room_id": room, "sender": bad, "content": {}}
    return [
        ("PUT", f"{V1}/send/t1", {"origin": bad, "pdus": [], "edus": []}),
        (
            "PUT",
            f"{V1}/send/t2",
            {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"room_id": bad}}]},
        ),
        ("PUT", f"{V1}/send/t3", {"pdus": [{**pdu, "sender": "@x:y", "room_id": bad}]}),
        ("PUT", f"{V2}/send_join/{room}/{event}", pdu),
        ("PUT", f"{V2}/send_leave/{room}/{event}", pdu),
        ("PUT", f"{V1}/send_knock/{room}/{event}", pdu),
        ("PUT", f"{V2}/invite/{room}/{event}", {"room_version": bad, "event": {}}),
        ("POST", f"{V1}/user/keys/query", {"device_keys": {"@u:x": [bad]}}),
        ("POST", f"{V1}/user/keys/claim", {"one_time_keys": {"@u:x": {"D": bad}}}),
        (
            "POST",
            f"{V1}/get_missing_events/{room}",
            {"earliest_events": [bad], "latest_events": ["$x"]},
        ),
    ]


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


@pytest.mark.parametrize("kind", ["nul", "deep"])
async def test_unstorable_bodies_are_refused_at_the_edge(
    two: tuple[Client, Client], kind: str
) -> None:
    a, b = hs_of(two[0]), hs_of(two[1])
    bad = f"@a{NUL}b:x" if kind == "nul" else nested(MAX_DEPTH + 5)
    for method, path, body in requests(b, bad):
        with pytest.raises(RequestFailed) as failed:
            await a.remote_client.request(method, b.server_name, path, content=body)
        assert (failed.value.status, failed.value.errcode) == (400, "M_BAD_JSON"), path
    # The refusals left the server serving federation as before.
    answer = await a.remote_client.put_json(b.server_name, f"{V1}/send/ok", {"pdus": []})
    assert answer == {"pdus": {}}


async def test_nul_in_event_content_still_federates(two: tuple[Client, Client]) -> None:
    """As a client may send content holding U+0000, so may a peer: such an event crosses
    federation and is served (the edge refuses NUL only where it could reach a column)."""
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    text = f"nul{NUL}inside"
    await alice.say(room_id, text)

    async def arrived() -> bool:
        status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="10")
        assert status == 200
        return any(e["content"].get("body") == text for e in page["chunk"])

    await eventually(arrived)
