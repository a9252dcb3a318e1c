"""Browsing across servers with Synapse: each side's room directory read by the other's
users over federation, and a space whose rooms live on both servers."""

from __future__ import annotations

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, eventually, session

pytestmark = pytest.mark.interop


async def test_directories_browsed_both_ways(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
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
