"""Synapse joins our rooms with partial state (it asks `omit_members`, which we honour):
it can send at once, and has the whole member list once it has fetched the full state
from us."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session

pytestmark = pytest.mark.interop

MEMBERS = 25


async def test_synapse_joins_our_room_with_partial_state(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        room_id = await alice.create_room(preset="public_chat", name="Busy")
        ours = [await User.register(http, our_server, f"m{n}_") for n in range(MEMBERS)]
        for user in ours:
            status, body = await user.join(room_id)
            assert status == 200, body
        sam = await User.register(http, synapse, "sam")
        status, body = await sam.join(room_id, our_server.server_name)
        assert status == 200, body
        await sam.say(room_id, "hello busy room")
        await eventually(lambda: alice.sees(room_id, "hello busy room"))

        expected = {alice.user_id, sam.user_id, *(u.user_id for u in ours)}

        async def all_members() -> bool:
            status, body = await sam.call("GET", f"/rooms/{quote(room_id)}/joined_members")
            return status == 200 and set(body["joined"]) == expected

        await eventually(all_members, within=60)
        await alice.say(room_id, "everyone here")
        await eventually(lambda: sam.sees(room_id, "everyone here"))
