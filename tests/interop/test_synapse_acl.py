"""Server ACLs against Synapse: our room's ACL shuts Synapse ("localhost:PORT") out while
letting us in (our server is named "127.0.0.1:PORT" here, so the two can be told apart),
and lifting it lets Synapse's user join and chat."""

from __future__ import annotations

from functools import partial

import pytest

from contrib.synapse_harness import SynapseInstance
from tests.interop.clients import User, eventually, session
from tests.interop.conftest import OurServerFactory

pytestmark = pytest.mark.interop

ACL = "m.room.server_acl"


async def test_our_acl_keeps_synapse_out_until_lifted(
    synapse: SynapseInstance, our_servers: OurServerFactory
) -> None:
    ours = await our_servers(host="127.0.0.1")
    async with session() as http:
        alice = await User.register(http, ours, "alice")
        sam = await User.register(http, synapse, "sam")
        room_id = await alice.create_room(preset="public_chat")
        await alice.ok("PUT", f"/rooms/{room_id}/state/{ACL}/", {"allow": ["127.0.0.1"]})

        status, body = await sam.join(room_id, ours.server_name)
        assert status != 200, body
        assert await alice.membership(room_id, sam.user_id) is None

        await alice.ok("PUT", f"/rooms/{room_id}/state/{ACL}/", {"allow": ["*"]})
        status, body = await sam.join(room_id, ours.server_name)
        assert status == 200, body
        await sam.say(room_id, "hello from synapse")
        await eventually(partial(alice.sees, room_id, "hello from synapse"))

        # Denied again while resident: Synapse's events are refused, but ours still go
        # to it, as the spec asks of a server whose room has a denied resident.
        await alice.ok("PUT", f"/rooms/{room_id}/state/{ACL}/", {"allow": ["127.0.0.1"]})
        await alice.say(room_id, "still sent to synapse")
        await eventually(partial(sam.sees, room_id, "still sent to synapse"))
