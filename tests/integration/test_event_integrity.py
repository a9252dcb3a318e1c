"""Every event a busy room stores passes the checks a remote server would make: format,
signatures, content hash, event id, and the auth rules against its own auth events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from federation.auth_rules import check_auth, check_auth_events_shape
from federation.events import Event
from federation.identifiers import create_event_id_for_room
from federation.keys import ServerKey
from federation.pdu_checks import check_pdu
from federation.room_versions import EventIdFormat, get_room_version
from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    return await homeserver_client(**{"rate_limits.enabled": False})


async def build_busy_room(client: TestClient[Any, Any], version: str) -> str:
    alice = await RoomUser.make(client, f"alice{version}")
    bob = await RoomUser.make(client, f"bob{version}")
    carol = await RoomUser.make(client, f"carol{version}")
    dave = await RoomUser.make(client, f"dave{version}")
    room_id = await alice.create_room(preset="public_chat", name="Busy", room_version=version)
    await bob.join(room_id)
    await carol.join(room_id)
    status, power = await alice.get(f"/v3/rooms/{room_id}/state/m.room.power_levels")
    assert status == 200
    power["users"] = {**power.get("users", {}), bob.user_id: 50}
    await alice.state(room_id, "m.room.power_levels", power)
    await bob.state(room_id, "m.room.topic", {"topic": "set by a moderator"})
    spam = await carol.say(room_id, "spam")
    await bob.redact(room_id, spam)
    for i in range(5):
        await (alice, bob, carol)[i % 3].say(room_id, f"hello {i}")
    await carol.leave(room_id)
    await dave.join(room_id)
    await bob.ok("POST", f"/rooms/{room_id}/kick", {"user_id": dave.user_id, "reason": "bye"})
    await bob.ok("POST", f"/rooms/{room_id}/ban", {"user_id": carol.user_id})
    await alice.state(room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    await alice.state(room_id, "m.room.join_rules", {"join_rule": "invite"})
    await alice.invite(room_id, dave.user_id)
    await dave.join(room_id)
    await bob.state(room_id, "m.room.name", {"name": "Busier"})
    await dave.say(room_id, "back again")
    await alice.ok("POST", f"/rooms/{room_id}/unban", {"user_id": carol.user_id})
    await bob.leave(room_id)
    return room_id


@pytest.mark.parametrize("version", ["10", "12"])
async def test_stored_events_pass_federation_checks(
    client: TestClient[Any, Any], version: str
) -> None:
    room_id = await build_busy_room(client, version)
    hs = client.app[HOMESERVER]
    key = hs.signing_key

    def lookup(server: str, key_id: str) -> ServerKey | None:
        if server == hs.server_name and key_id == key.key_id:
            return ServerKey(key.verify_key, 2**62)
        return None

    room_version = get_room_version(version)
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id, json, rejected_reason FROM events WHERE room_id = %s"
            " ORDER BY stream_ordering",
            (room_id,),
        )
        rows = await cur.fetchall()
        cur = await conn.execute(
            "SELECT e.event_id, a FROM events e, unnest(e.auth_event_ids) AS a"
            " WHERE e.room_id = %s",
            (room_id,),
        )
        edges = await cur.fetchall()
    assert len(rows) >= 30
    events: dict[str, Event] = {}
    for event_id, text, rejected in rows:
        assert rejected is None
        pdu = orjson.loads(text)
        assert "unsigned" not in pdu
        checked = check_pdu(pdu, room_version, lookup)
        assert not checked.redacted, f"content hash mismatch for {event_id}"
        assert checked.event.event_id == event_id
        events[event_id] = checked.event
    if room_version.event_id_format is not EventIdFormat.V1:
        assert all(e.event_id.startswith("$") for e in events.values())

    stored_edges: dict[str, set[str]] = {}
    for event_id, auth_id in edges:
        stored_edges.setdefault(event_id, set()).add(auth_id)
    create_id = (
        create_event_id_for_room(room_id) if room_version.room_id_from_create_event else None
    )
    checked_count = 0
    for event in events.values():
        assert set(event.auth_event_ids) == stored_edges.get(event.event_id, set())
        auth_events = [events[auth_id] for auth_id in event.auth_event_ids]
        check_auth_events_shape(event, auth_events)
        auth_state = {e.state_tuple: e for e in auth_events}
        if create_id is not None and event.type != "m.room.create":
            auth_state[("m.room.create", "")] = events[create_id]
        check_auth(event, auth_state)
        for prev in event.prev_event_ids:
            assert prev in events, f"{event.event_id} cites an unknown prev event"
            assert events[prev].depth < event.depth
        checked_count += 1
    assert checked_count == len(events)
    assert {e.type for e in events.values()} >= {
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.redaction",
        "m.room.message",
        "m.room.topic",
        "m.room.name",
        "m.room.history_visibility",
        "m.room.join_rules",
    }
