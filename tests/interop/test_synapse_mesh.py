"""Two of our servers and Synapse in one room: every member sees every message exactly
once, each sender's messages in the order they were sent."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from contrib.synapse_harness import SynapseInstance
from tests.interop.clients import User, eventually, session
from tests.interop.conftest import OurServerFactory

pytestmark = pytest.mark.interop

PER_SENDER = 8


async def test_three_servers_one_room(
    synapse: SynapseInstance, our_servers: OurServerFactory
) -> None:
    first, second = await our_servers(), await our_servers()
    async with session() as http:
        alice = await User.register(http, first, "alice")
        bob = await User.register(http, second, "bob")
        sam = await User.register(http, synapse, "sam")
        room_id = await alice.create_room(preset="public_chat")
        for user in (bob, sam):
            status, body = await user.join(room_id, first.server_name)
            assert status == 200, body
        users = (alice, bob, sam)

        async def everyone_joined(reader: User) -> bool:
            return all([await reader.membership(room_id, u.user_id) == "join" for u in users])

        for reader in users:
            await eventually(partial(everyone_joined, reader))

        async def chatter(user: User) -> None:
            for n in range(PER_SENDER):
                await user.say(room_id, f"{user.user_id} #{n}")

        await asyncio.gather(*(chatter(u) for u in users))
        expected = {f"{u.user_id} #{n}" for u in users for n in range(PER_SENDER)}

        async def all_arrived(reader: User) -> bool:
            return expected <= set(await reader.bodies(room_id))

        for reader in users:
            await eventually(partial(all_arrived, reader))
            seen = [b for b in await reader.bodies(room_id) if b in expected]
            assert len(seen) == len(expected), f"{reader.user_id} saw duplicates: {seen}"
            for sender in users:
                mine = [b for b in seen if b.startswith(f"{sender.user_id} #")]
                assert mine == [f"{sender.user_id} #{n}" for n in range(PER_SENDER)], (
                    f"{reader.user_id} saw {sender.user_id}'s messages out of order"
                )
