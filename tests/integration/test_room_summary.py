"""Room summaries (MSC3266, `/v1/room_summary` and Synapse's unstable paths): what a
client may show of a room before joining, to whom, and of rooms on other servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tests.integration.conftest import RoomUser
from tests.integration.test_federation_directory import name_of, peer

UNSTABLE = "/unstable/im.nheko.summary"


async def test_summary_visibility(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    public = await alice.create_room(
        preset="public_chat", name="Lobby", topic="Hello", room_alias_name="lobby"
    )
    private = await alice.create_room(preset="private_chat", name="Secret")
    members = await alice.create_room(preset="private_chat", name="Members")
    restricted = await alice.create_room(
        preset="private_chat",
        name="Club",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": members}],
                },
            }
        ],
    )

    status, body = await bob.get(f"/v1/room_summary/{public}")
    assert status == 200, body
    assert body["room_id"] == public and body["name"] == "Lobby" and body["topic"] == "Hello"
    assert body["join_rule"] == "public" and body["num_joined_members"] == 1
    assert body["membership"] == "leave" and body["room_version"]
    alias = quote(f"#lobby:{name_of(client)}")
    for path in (f"/v1/room_summary/{alias}", f"{UNSTABLE}/rooms/{alias}/summary"):
        status, body = await bob.get(path)
        assert (status, body["room_id"]) == (200, public), path
    # Unauthenticated callers see open rooms only, and no membership.
    resp = await client.get(f"/_matrix/client/v1/room_summary/{public}")
    assert resp.status == 200 and "membership" not in await resp.json()
    resp = await client.get(f"/_matrix/client/v1/room_summary/{private}")
    assert resp.status == 404

    # A private room is unknown to outsiders and shown to invitees and members.
    status, body = await bob.get(f"/v1/room_summary/{private}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    await alice.invite(private, bob.user_id)
    status, body = await bob.get(f"{UNSTABLE}/summary/{private}")
    assert (status, body["membership"], body["join_rule"]) == (200, "invite", "invite")
    status, body = await alice.get(f"/v1/room_summary/{private}")
    assert (status, body["membership"]) == (200, "join")

    # A restricted room shows itself to members of the room it lets in.
    status, _ = await bob.get(f"/v1/room_summary/{restricted}")
    assert status == 404
    await alice.invite(members, bob.user_id)
    await bob.join(members)
    status, body = await bob.get(f"/v1/room_summary/{restricted}")
    assert (status, body["join_rule"], body["allowed_room_ids"]) == (200, "restricted", [members])

    for unknown in ("!nowhere:example.org", quote(f"#nothing:{name_of(client)}")):
        status, body = await bob.get(f"/v1/room_summary/{unknown}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), unknown
    status, body = await bob.get("/v1/room_summary/not-a-room")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, versions = await bob.get("/versions")
    assert versions["unstable_features"]["im.nheko.summary"] is True


async def test_summary_of_a_room_on_another_server(homeserver_client: Callable[..., Any]) -> None:
    a = await peer(homeserver_client)
    b = await peer(homeserver_client)
    carol = await RoomUser.make(a, "carol")
    bob = await RoomUser.make(b, "bob")
    theirs = await bob.create_room(preset="public_chat", name="On B", room_alias_name="there")
    hidden = await bob.create_room(preset="private_chat", name="Hidden")

    status, body = await carol.get(f"/v1/room_summary/{theirs}", via=name_of(b))
    assert status == 200, body
    assert (body["name"], body["num_joined_members"], body["membership"]) == ("On B", 1, "leave")
    assert "children_state" not in body
    status, body = await carol.get(f"/v1/room_summary/{quote(f'#there:{name_of(b)}')}")
    assert (status, body["room_id"]) == (200, theirs)
    # Without via we do not know where to ask; B does not tell of its private room.
    status, _ = await carol.get(f"/v1/room_summary/{theirs}")
    assert status == 404
    status, _ = await carol.get(f"/v1/room_summary/{hidden}", via=name_of(b))
    assert status == 404
