"""Application services receiving ephemeral data (typing, receipts, presence), and
asked about users and aliases in their namespaces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homeserver.api.context import HOMESERVER
from homeserver.services.appservices.sender import AppServiceSender
from tests.integration.appservices.bridge import (
    QUIET_S,
    Bridge,
    Client,
    as_call,
    new_human,
    register_bridged,
    registration,
    room_with,
    write_registration,
)
from tests.integration.conftest import CLIENT_V3, RoomUser


@pytest.fixture(params=["receive_ephemeral", "de.sorunome.msc2409.push_ephemeral"])
async def ephemeral_server(
    request: pytest.FixtureRequest,
    homeserver_client: Callable[..., Any],
    bridge: Bridge,
    tmp_path: Path,
) -> Client:
    """A server whose bridge receives ephemeral data (by the stable or MSC2409's key)."""
    bridge.registered_with = request.param
    data = registration(bridge.url, **{request.param: True})
    reg = write_registration(tmp_path / "bridge.yaml", data)
    client: Client = await homeserver_client(
        open_registration=True,
        app_service_config_files=[reg],
        **{"rate_limits.enabled": False},
    )
    bridge.hs_url = str(client.make_url("")).rstrip("/")
    return client


def _typing_in(room_id: str, user_ids: list[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.typing"
        and e["room_id"] == room_id
        and e["content"] == {"user_ids": user_ids}
    )


def _read_receipt(room_id: str, event_id: str, user_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["type"] == "m.receipt"
        and e["room_id"] == room_id
        and user_id in e["content"].get(event_id, {}).get("m.read", {})
    )


async def test_typing_receipts_and_presence_reach_the_bridge(
    ephemeral_server: Client, bridge: Bridge
) -> None:
    server = ephemeral_server
    bridged = await register_bridged(server, "bridge_kim")
    room_id, human = await room_with(server, bridged)
    other = await human.create_room()
    unseen = await human.say(other, "the bridge is not here")
    seen = await human.say(room_id, "the bridge is here")
    # In the room the bridge is not in first: everything later must not carry it.
    await human.ok("PUT", f"/rooms/{other}/typing/{human.user_id}", {"typing": True})
    await human.ok("POST", f"/rooms/{other}/receipt/m.read/{unseen}", {})
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": True})
    await bridge.wait_for_ephemeral(_typing_in(room_id, [human.user_id]))
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{seen}", {})
    receipt = await bridge.wait_for_ephemeral(_read_receipt(room_id, seen, human.user_id))
    assert isinstance(receipt["content"][seen]["m.read"][human.user_id]["ts"], int)
    # Stopping is sent too: the bridge clears the typing indicator on the other side.
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": False})
    await bridge.wait_for_ephemeral(_typing_in(room_id, []))
    # Presence of users sharing a room with bridged users.
    await human.ok(
        "PUT", f"/presence/{human.user_id}/status", {"presence": "unavailable", "status_msg": "afk"}
    )
    presence = await bridge.wait_for_ephemeral(
        lambda e: (
            e["type"] == "m.presence"
            and e["sender"] == human.user_id
            and e["content"].get("status_msg") == "afk"
        )
    )
    assert presence["content"]["presence"] == "unavailable"
    # Nothing of the room the bridge is not interested in.
    ephemeral = bridge.ephemeral()
    assert not [e for e in ephemeral if e.get("room_id") == other]
    # Transactions carry `events` even when only ephemeral data is new.
    assert bridge.bodies and all(isinstance(body["events"], list) for body in bridge.bodies)
    # Registered with MSC2409's key, the list is also under MSC2409's name.
    unstable = bridge.ephemeral("de.sorunome.msc2409.ephemeral")
    assert unstable == (ephemeral if bridge.registered_with != "receive_ephemeral" else [])


async def test_receipts_made_while_the_sender_is_down_arrive_after_restart(
    ephemeral_server: Client, bridge: Bridge
) -> None:
    server = ephemeral_server
    bridged = await register_bridged(server, "bridge_lee")
    room_id, human = await room_with(server, bridged)
    first = await human.say(room_id, "one")
    await bridge.wait_for_event(first)
    hs = server.server.app[HOMESERVER]
    await hs.appservices_sender.close()
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}", {})
    hs.appservices_sender = AppServiceSender(
        hs.db, hs.event_cache, hs.appservices_registry, typing=hs.typing, presence=hs.presence
    )
    await hs.appservices_sender.start()
    await bridge.wait_for_ephemeral(_read_receipt(room_id, first, human.user_id))
    receipts = [e for e in bridge.ephemeral() if _read_receipt(room_id, first, human.user_id)(e)]
    assert len(receipts) == 1


async def test_no_ephemeral_data_without_receive_ephemeral(server: Client, bridge: Bridge) -> None:
    bridged = await register_bridged(server, "bridge_max")
    room_id, human = await room_with(server, bridged)
    hello = await human.say(room_id, "hello")
    await human.ok("PUT", f"/rooms/{room_id}/typing/{human.user_id}", {"typing": True})
    await human.ok("POST", f"/rooms/{room_id}/receipt/m.read/{hello}", {})
    await human.ok("PUT", f"/presence/{human.user_id}/status", {"presence": "online"})
    after = await human.say(room_id, "after the typing and the receipt")
    await bridge.wait_for_event(after)
    await asyncio.sleep(QUIET_S)
    assert bridge.bodies and not [b for b in bridge.bodies if "ephemeral" in b]
    # No transaction was sent for ephemeral data alone.
    assert all(body["events"] for body in bridge.bodies)


async def test_a_missing_bridged_user_is_asked_for_and_can_be_invited(
    server: Client, bridge: Bridge
) -> None:
    human = RoomUser(server, *(await new_human(server, "nina")))
    room_id = await human.create_room()
    ghost = "@bridge_oscar:test.local"
    resp = await server.post(
        f"{CLIENT_V3}/rooms/{room_id}/invite", json={"user_id": ghost}, headers=human.headers
    )
    assert resp.status == 200, await resp.text()
    assert bridge.user_queries == [ghost]
    # The bridge created it: the invite is real, and the ghost can join.
    status, _ = await as_call(server, "POST", f"/v3/rooms/{room_id}/join", user_id=ghost)
    assert status == 200
    # A user the bridge does not know stays unknown, and is not invited.
    nobody = "@bridge_nobody:test.local"
    resp = await server.post(
        f"{CLIENT_V3}/rooms/{room_id}/invite", json={"user_id": nobody}, headers=human.headers
    )
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")
    assert bridge.user_queries == [ghost, nobody]
    # Profile lookups ask too; existing users and users outside the namespace are not asked.
    resp = await server.get(f"{CLIENT_V3}/profile/%40bridge_pia:test.local")
    assert resp.status == 200, await resp.text()
    resp = await server.get(f"{CLIENT_V3}/profile/%40bridge_oscar:test.local")
    assert resp.status == 200
    resp = await server.get(f"{CLIENT_V3}/profile/%40stranger:test.local")
    assert resp.status == 404
    assert bridge.user_queries == [ghost, nobody, "@bridge_pia:test.local"]
    # createRoom's invites too.
    resp = await server.post(
        f"{CLIENT_V3}/createRoom",
        json={"invite": ["@bridge_quinn:test.local"], "is_direct": True},
        headers=human.headers,
    )
    assert resp.status == 200, await resp.text()
    dm = (await resp.json())["room_id"]
    status, member = await human.get(f"/v3/rooms/{dm}/state/m.room.member/@bridge_quinn:test.local")
    assert (status, member.get("membership")) == (200, "invite"), member
    assert bridge.user_queries[-1] == "@bridge_quinn:test.local"


async def test_joining_a_namespaced_alias_asks_the_service(server: Client, bridge: Bridge) -> None:
    human = RoomUser(server, *(await new_human(server, "rita")))
    resp = await server.post(f"{CLIENT_V3}/join/%23bridge_hall:test.local", headers=human.headers)
    assert resp.status == 200, await resp.text()
    assert bridge.alias_queries == ["#bridge_hall:test.local"]
    room_id = (await resp.json())["room_id"]
    status, rooms = await human.get("/v3/joined_rooms")
    assert status == 200 and room_id in rooms["joined_rooms"]
    # Outside the namespace, an unknown alias is 404 without asking.
    resp = await server.post(f"{CLIENT_V3}/join/%23nowhere:test.local", headers=human.headers)
    assert resp.status == 404
    assert bridge.alias_queries == ["#bridge_hall:test.local"]
