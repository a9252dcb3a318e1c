"""History and pre-join membership with Synapse: our user pages back past their join in a
Synapse room (we backfill from Synapse), knocks on a Synapse room, and invites a Synapse
user from createRoom."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, invited_to, session

pytestmark = pytest.mark.interop


async def test_we_backfill_a_synapse_room(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        olga = await User.register(http, our_server, "olga")
        room_id = await sam.create_room(preset="public_chat", name="Old news")
        sent = [f"old {i}" for i in range(30)]
        for text in sent:
            await sam.say(room_id, text)
        status, body = await olga.join(room_id, via=synapse.server_name)
        assert status == 200, body
        chunk: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "20"}
        for _ in range(10):
            page = await olga.ok("GET", f"/rooms/{quote(room_id)}/messages", **params)
            chunk.extend(page["chunk"])
            if "end" not in page:
                break
            params["from"] = page["end"]
        oldest_first = list(reversed(chunk))
        texts = [e["content"]["body"] for e in oldest_first if e["type"] == "m.room.message"]
        assert texts == sent
        assert oldest_first[0]["type"] == "m.room.create"


async def test_we_knock_on_a_synapse_room(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        olga = await User.register(http, our_server, "olga")
        room_id = await sam.create_room(
            name="Knock knock",
            initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
        )
        await olga.ok("POST", f"/knock/{quote(room_id)}", {}, server_name=synapse.server_name)
        await eventually(lambda: _is(sam, room_id, olga.user_id, "knock"))
        body = await olga.sync_until(lambda b: room_id in b.get("rooms", {}).get("knock", {}))
        events = body["rooms"]["knock"][room_id]["knock_state"]["events"]
        assert {"name": "Knock knock"} in [e["content"] for e in events]
        await sam.ok("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": olga.user_id})
        await olga.sync_until(lambda b: invited_to(b, room_id))
        status, answer = await olga.join(room_id)
        assert status == 200, answer
        await eventually(lambda: _is(sam, room_id, olga.user_id, "join"))


async def test_we_invite_a_synapse_user_from_create_room(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        olga = await User.register(http, our_server, "olga")
        room_id = await olga.create_room(name="Ours", invite=[sam.user_id], is_direct=True)
        body = await sam.sync_until(lambda b: invited_to(b, room_id))
        events = body["rooms"]["invite"][room_id]["invite_state"]["events"]
        assert {"name": "Ours"} in [e["content"] for e in events]
        status, answer = await sam.join(room_id)
        assert status == 200, answer
        await eventually(lambda: _is(olga, room_id, sam.user_id, "join"))


async def _is(user: User, room_id: str, target: str, expected: str) -> bool:
    return await user.membership(room_id, target) == expected
