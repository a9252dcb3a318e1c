"""Restricted rooms and room upgrades across our server and Synapse: a member of the
allowed space joins from the other server (each side the resident one in turn), and an
upgraded room is followed by both servers' users."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session

pytestmark = pytest.mark.interop


async def space_and_restricted_room(owner: User, name: str) -> tuple[str, str]:
    """A public space, and a room (v10) only its members may join."""
    space = await owner.create_room(
        preset="public_chat", name=f"{name} space", creation_content={"type": "m.space"}
    )
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
    room = await owner.create_room(
        preset="private_chat",
        name=f"{name} members only",
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": rules}],
    )
    return space, room


async def member_event(user: User, room_id: str, target: str) -> dict[str, object]:
    return dict(
        await user.ok("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(target)}")
    )


async def restricted_join(resident: User, joiner: User, resident_server: str) -> None:
    space, room = await space_and_restricted_room(resident, "R")
    # Not a member of the space yet: refused (Synapse, as the joining server, reports
    # the resident's refusal as a 502 "via any server").
    status, body = await joiner.join(room, resident_server)
    assert status in (400, 403, 502), (status, body)
    if status != 502:  # ours passes the resident's refusal on
        assert body["errcode"] in ("M_FORBIDDEN", "M_UNABLE_TO_AUTHORISE_JOIN"), body
    assert await resident.membership(room, joiner.user_id) is None
    status, body = await joiner.join(space, resident_server)
    assert status == 200, body
    status, body = await joiner.join(room, resident_server)
    assert status == 200, body
    event = await member_event(resident, room, joiner.user_id)
    assert event["membership"] == "join"
    assert event["join_authorised_via_users_server"] == resident.user_id
    await resident.say(room, "welcome in")
    await eventually(lambda: joiner.sees(room, "welcome in"))
    await joiner.say(room, "glad to be here")
    await eventually(lambda: resident.sees(room, "glad to be here"))


async def test_restricted_room_joined_from_our_server(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        alice = await User.register(http, our_server, "alice")
        await restricted_join(sam, alice, synapse.server_name)


async def test_restricted_room_joined_from_synapse(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        alice = await User.register(http, our_server, "alice")
        await restricted_join(alice, sam, our_server.server_name)


async def follow_upgrade(owner: User, member: User, owner_server: str) -> None:
    old = await owner.create_room(preset="public_chat", name="Before", room_version="10")
    status, body = await member.join(old, owner_server)
    assert status == 200, body
    await eventually(lambda: owner_sees_member(owner, old, member.user_id))
    new = (await owner.ok("POST", f"/rooms/{quote(old)}/upgrade", {"new_version": "11"}))[
        "replacement_room"
    ]

    async def tombstoned() -> bool:
        status, body = await member.call("GET", f"/rooms/{quote(old)}/state/m.room.tombstone/")
        return status == 200 and body.get("replacement_room") == new

    await eventually(tombstoned)
    status, body = await member.join(new, owner_server)
    assert status == 200, body
    create = await member.ok("GET", f"/rooms/{quote(new)}/state/m.room.create/")
    assert create["predecessor"]["room_id"] == old
    await member.say(new, "followed")
    await eventually(lambda: owner.sees(new, "followed"))
    name = await member.ok("GET", f"/rooms/{quote(new)}/state/m.room.name/")
    assert name["name"] == "Before"


async def owner_sees_member(owner: User, room_id: str, user_id: str) -> bool:
    return await owner.membership(room_id, user_id) == "join"


async def test_upgrade_of_our_room_followed_from_synapse(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        alice = await User.register(http, our_server, "alice")
        await follow_upgrade(alice, sam, our_server.server_name)


async def test_upgrade_of_synapse_room_followed_from_ours(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        sam = await User.register(http, synapse, "sam")
        alice = await User.register(http, our_server, "alice")
        await follow_upgrade(sam, alice, synapse.server_name)
