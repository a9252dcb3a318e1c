"""Jumping to a date from before one's server joined a room, with Synapse on the other
side: each server asks the other's federation /timestamp_to_event."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, session

pytestmark = pytest.mark.interop


async def history_then_join(host: User, joiner: User, via: str) -> tuple[str, list[str], list[int]]:
    room_id = await host.create_room(preset="public_chat")
    sent, times = [], []
    for n in range(3):
        event_id = await host.say(room_id, f"early {n}")
        event = await host.ok("GET", f"/rooms/{quote(room_id)}/event/{quote(event_id)}")
        sent.append(event_id)
        times.append(event["origin_server_ts"])
        await asyncio.sleep(0.02)
    status, body = await joiner.join(room_id, via)
    assert status == 200, body
    return room_id, sent, times


async def test_jump_to_dates_before_joining_both_ways(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")

        # Our user, in Synapse's room: our server asks Synapse.
        room_id, sent, times = await history_then_join(sam, alice, synapse.server_name)
        body = await alice.ok(
            "GET",
            f"/../v1/rooms/{quote(room_id)}/timestamp_to_event",
            ts=str(times[1]),
            dir="f",
        )
        assert body["event_id"] == sent[1]
        await alice.ok("GET", f"/rooms/{quote(room_id)}/context/{quote(sent[1])}")

        # Synapse's user, in our room: Synapse asks us.
        room_id, sent, times = await history_then_join(alice, sam, our_server.server_name)
        body = await sam.ok(
            "GET",
            f"/../v1/rooms/{quote(room_id)}/timestamp_to_event",
            ts=str(times[1]),
            dir="f",
        )
        assert body["event_id"] == sent[1]
