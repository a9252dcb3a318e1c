"""We join a big Synapse-held room with partial state (Synapse answers `omit_members`):
our user sends while the room is still partial here, and once the full state is fetched
in the background the member list is complete. The room's size is
HOMESERVER_INTEROP_BIG_ROOM members (default 300: Synapse takes about four minutes to
get 2,000 members in on a busy machine, see contrib/synapse_rooms.py)."""

from __future__ import annotations

import os
import time
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from contrib.synapse_rooms import populate, register_admin
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session

MEMBERS = int(os.environ.get("HOMESERVER_INTEROP_BIG_ROOM", "300"))
# Filling the room takes Synapse about 0.15 s a member on a busy machine.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(300 + MEMBERS // 2)]


async def test_we_join_a_big_synapse_room_with_partial_state(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        token = await register_admin(http, synapse.client_url, "bigboss")
        owner = User(http, synapse.client_url, f"@bigboss:{synapse.server_name}", token)
        room_id = await owner.create_room(preset="public_chat", name="Big room")
        tag = str(int(time.time()))
        members = [f"@big{tag}_{n}:{synapse.server_name}" for n in range(MEMBERS)]
        await populate(http, synapse.client_url, token, room_id, members)

        ana = await User.register(http, our_server, "ana")
        status, body = await ana.join(room_id, synapse.server_name)
        assert status == 200, body
        # The fetch of the full state cannot take its answer in while we hold the lock.
        async with our_server.room_locks.room_lock(room_id):
            assert await our_server.partial_state.is_partial(room_id)
            await ana.say(room_id, "hello from a partial room")
            assert await our_server.partial_state.is_partial(room_id)
            await eventually(lambda: owner.sees(room_id, "hello from a partial room"))

        expected = {owner.user_id, ana.user_id, *members}
        # /members waits for the full state, as Synapse's does.
        status, body = await ana.call("GET", f"/rooms/{quote(room_id)}/members")
        assert status == 200, body
        joined = {e["state_key"] for e in body["chunk"] if e["content"]["membership"] == "join"}
        assert joined == expected
        assert not await our_server.partial_state.is_partial(room_id)
        status, body = await ana.call("GET", f"/rooms/{quote(room_id)}/joined_members")
        assert status == 200 and set(body["joined"]) == expected

        await owner.say(room_id, "welcome")
        await eventually(lambda: ana.sees(room_id, "welcome"))
