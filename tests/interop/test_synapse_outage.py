"""Synapse goes away while our users keep talking: our outbound queue holds the messages
and, once Synapse is back, delivers every one of them in order, with no restart here."""

from __future__ import annotations

import asyncio

import pytest

from contrib.synapse_harness import SynapseInstance
from tests.interop.clients import User, eventually, session
from tests.interop.conftest import OurServerFactory

pytestmark = pytest.mark.interop

MESSAGES = 100
# Our retries of an unreachable server back off from 1 s, doubling; capped here so
# that the retry after Synapse's return comes within a few seconds.
MAX_RETRY_INTERVAL_S = 4


async def test_messages_sent_during_an_outage_arrive_in_order(
    synapse: SynapseInstance, our_servers: OurServerFactory
) -> None:
    ours = await our_servers(**{"federation.max_retry_interval_s": MAX_RETRY_INTERVAL_S})
    async with session() as http:
        alice = await User.register(http, ours, "alice")
        sam = await User.register(http, synapse, "sam")
        room_id = await alice.create_room(preset="public_chat")
        status, body = await sam.join(room_id, ours.server_name)
        assert status == 200, body
        await alice.say(room_id, "before the outage")
        await eventually(lambda: sam.sees(room_id, "before the outage"))

        # In threads: our server runs on this event loop and must keep serving meanwhile.
        await asyncio.to_thread(synapse.stop)
        try:
            sent = [f"while away #{n}" for n in range(MESSAGES)]
            for text in sent:
                await alice.say(room_id, text)
        finally:
            await asyncio.to_thread(synapse.start)

        async def all_arrived() -> bool:
            return set(sent) <= set(await sam.bodies(room_id, limit=MESSAGES + 20))

        await eventually(all_arrived, within=60)
        seen = [b for b in await sam.bodies(room_id, limit=MESSAGES + 20) if b in set(sent)]
        assert seen == sent
