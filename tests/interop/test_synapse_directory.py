"""Browsing across servers with Synapse: each side's room directory read by the other's
users over federation, and a space whose rooms live on both servers."""

from __future__ import annotations

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session
from tests.interop.conftest import OurServerFactory

pytestmark = pytest.mark.interop


async def test_directories_browsed_both_ways(
    synapse: SynapseInstance, our_servers: OurServerFactory
) -> None:
    our_server = await our_servers(allow_public_rooms_over_federation=True)
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        ours = await alice.create_room(visibility="public", preset="public_chat", name="Ours 1")
        theirs = await sam.create_room(
            visibility="public", preset="public_chat", name="Theirs 1", topic="synapse side"
        )
        await sam.create_room(visibility="public", preset="public_chat", name="Theirs 2")

        # Our user reads Synapse's list (which Synapse fills in the background), page by
        # page and filtered.
        async def both_listed() -> bool:
            page = await alice.ok("GET", "/publicRooms", server=synapse.server_name)
            return {"Theirs 1", "Theirs 2"} <= {r.get("name") for r in page["chunk"]}

        await eventually(both_listed)
        first = await alice.ok("GET", "/publicRooms", server=synapse.server_name, limit="1")
        assert len(first["chunk"]) == 1 and "next_batch" in first
        second = await alice.ok(
            "GET",
            "/publicRooms",
            server=synapse.server_name,
            limit="1",
            since=first["next_batch"],
        )
        assert second["chunk"][0]["room_id"] != first["chunk"][0]["room_id"]
        found = await alice.ok(
            "POST",
            f"/publicRooms?server={synapse.server_name}",
            {"filter": {"generic_search_term": "synapse side"}},
        )
        assert [r["room_id"] for r in found["chunk"]] == [theirs]

        # Synapse's user reads ours, through Synapse.
        page = await sam.ok("GET", "/publicRooms", server=our_server.server_name)
        assert [r["room_id"] for r in page["chunk"]] == [ours]
        assert page["chunk"][0]["name"] == "Ours 1"
        found = await sam.ok(
            "POST",
            f"/publicRooms?server={our_server.server_name}",
            {"filter": {"generic_search_term": "nothing like it"}},
        )
        assert found["chunk"] == []


async def test_space_hierarchy_spanning_both_servers(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        space_type = {"type": "m.space"}
        ours_space = await alice.create_room(
            preset="public_chat", name="Our space", creation_content=space_type
        )
        ours_room = await alice.create_room(preset="public_chat", name="Our room")
        theirs_space = await sam.create_room(
            preset="public_chat", name="Their space", creation_content=space_type
        )
        theirs_room = await sam.create_room(preset="public_chat", name="Their room")
        theirs_hidden = await sam.create_room(preset="private_chat", name="Their secret")
        ours, theirs = our_server.server_name, synapse.server_name

        async def child(user: User, space: str, room: str, via: str, order: str) -> None:
            content = {"via": [via], "order": order}
            await user.ok("PUT", f"/rooms/{space}/state/m.space.child/{room}", content)

        # Our space holds Synapse's space, which holds a room of each server.
        await child(alice, ours_space, theirs_space, theirs, "1")
        await child(sam, theirs_space, theirs_room, theirs, "1")
        await child(sam, theirs_space, ours_room, ours, "2")
        await child(sam, theirs_space, theirs_hidden, theirs, "3")

        # Our user walks into Synapse's rooms (and back to ours through them).
        body = await alice.ok("GET", "/../v1/rooms/" + ours_space + "/hierarchy")
        assert [r["room_id"] for r in body["rooms"]] == [
            ours_space,
            theirs_space,
            theirs_room,
            ours_room,
        ]
        names = {r["room_id"]: r.get("name") for r in body["rooms"]}
        assert names[theirs_room] == "Their room"

        # Synapse's user walks Synapse's space, our room in it summarised by our
        # federation /hierarchy.
        body = await sam.ok("GET", "/../v1/rooms/" + theirs_space + "/hierarchy")
        assert [r["room_id"] for r in body["rooms"]] == [
            theirs_space,
            theirs_room,
            ours_room,
            theirs_hidden,
        ]
        names = {r["room_id"]: r.get("name") for r in body["rooms"]}
        assert names[ours_room] == "Our room"
