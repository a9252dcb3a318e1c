"""A call member of ours whose client vanished leaves the call for Synapse's users too:
the delayed leave our server sends when due goes over federation like any event."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session

pytestmark = pytest.mark.interop

CALL_MEMBER = "org.matrix.msc3401.call.member"


async def _member_content(watcher: User, room_id: str, key: str) -> Any:
    status, body = await watcher.call(
        "GET", f"/rooms/{quote(room_id)}/state/{CALL_MEMBER}/{quote(key)}"
    )
    return body if status == 200 else None


async def test_delayed_leave_reaches_synapse(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        room_id = await alice.create_room(preset="public_chat")
        status, body = await sam.join(room_id, our_server.server_name)
        assert status == 200, body
        key = f"_{alice.user_id}_DEVICE_m.call"
        path = f"/rooms/{quote(room_id)}/state/{CALL_MEMBER}/{quote(key)}"
        scheduled = await alice.ok("PUT", path, {}, **{"org.matrix.msc4140.delay": "1500"})
        assert scheduled["delay_id"]
        await alice.ok("PUT", path, {"application": "m.call", "call_id": ""})

        async def sam_saw_join_then_leave() -> bool:
            timeline = await sam.timeline(room_id)
            contents = [e["content"] for e in timeline if e["type"] == CALL_MEMBER]
            return contents == [{"application": "m.call", "call_id": ""}, {}]

        await eventually(sam_saw_join_then_leave)
        assert await _member_content(sam, room_id, key) == {}
