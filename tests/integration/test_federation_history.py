"""Across two of our servers on loopback: what a remote invite or knock shows in sync
(the stripped state the other server sent), createRoom inviting a remote user, and
backfilling history from before our join when paging /messages backwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from homeserver.storage.rooms import events as event_store
from tests.integration.conftest import RoomUser
from tests.integration.test_federation_rooms import Client, eventually, hs_of, membership, peer


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def section(user: RoomUser, name: str, room_id: str) -> dict[str, Any] | None:
    status, body = await user.get("/v3/sync")
    assert status == 200
    entry: dict[str, Any] | None = body.get("rooms", {}).get(name, {}).get(room_id)
    return entry


def by_type(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in events if e["type"] != "m.room.member"}


async def test_remote_invite_shows_the_stripped_state(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(
        preset="private_chat",
        name="Plans",
        room_alias_name="plans",
        initial_state=[
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    await alice.invite(room_id, bob.user_id)

    async def invited() -> bool:
        return await section(bob, "invite", room_id) is not None

    await eventually(invited)
    entry = await section(bob, "invite", room_id)
    assert entry is not None
    events = entry["invite_state"]["events"]
    state = by_type(events)
    assert state["m.room.name"]["content"] == {"name": "Plans"}
    assert state["m.room.join_rules"]["content"] == {"join_rule": "invite"}
    assert state["m.room.canonical_alias"]["content"]["alias"] == f"#plans:{hs_of(a).server_name}"
    assert state["m.room.encryption"]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert "m.room.create" in state
    members = {
        e["state_key"]: e["content"]["membership"] for e in events if e["type"] == "m.room.member"
    }
    assert members[alice.user_id] == "join"  # who invites
    assert members[bob.user_id] == "invite"
    assert sum(1 for e in events if e.get("state_key") == bob.user_id) == 1

    await bob.join(room_id)
    assert await section(bob, "join", room_id) is not None
    assert await section(bob, "invite", room_id) is None


async def test_create_room_inviting_a_remote_user(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(
        preset="trusted_private_chat", name="Direct", invite=[bob.user_id], is_direct=True
    )
    async with hs_of(a).db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id FROM room_memberships WHERE room_id = %s AND user_id = %s",
            (room_id, bob.user_id),
        )
        row = await cur.fetchone()
        assert row is not None
        stored = (await event_store.get_events(conn, [row[0]]))[row[0]]
    assert hs_of(b).server_name in stored.json  # co-signed by the invitee's server

    async def invited() -> bool:
        return await section(bob, "invite", room_id) is not None

    await eventually(invited)
    entry = await section(bob, "invite", room_id)
    assert entry is not None
    events = entry["invite_state"]["events"]
    assert by_type(events)["m.room.name"]["content"] == {"name": "Direct"}
    mine = [e for e in events if e.get("state_key") == bob.user_id]
    assert mine[0]["content"] == {"membership": "invite", "is_direct": True}
    await bob.join(room_id)
    assert await membership(alice, room_id, bob.user_id) == "join"


async def test_create_room_fails_whole_when_the_invitee_server_refuses(
    two: tuple[Client, Client],
) -> None:
    a, _ = two
    alice = await RoomUser.make(a, "alice")
    resp = await alice.client.post(
        "/_matrix/client/v3/createRoom",
        headers=alice.headers,
        json={"invite": ["@nobody:127.0.0.1:1"]},
    )
    assert resp.status == 502
    assert (await resp.json())["errcode"] == "M_UNKNOWN"
    status, body = await alice.get("/v3/joined_rooms")
    assert status == 200 and body["joined_rooms"] == []


async def history(user: RoomUser, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """Every event of /messages paging backwards from now, oldest first."""
    chunk: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": str(limit)}
    for _ in range(20):
        status, page = await user.get(f"/v3/rooms/{room_id}/messages", **params)
        assert status == 200, page
        chunk.extend(page["chunk"])
        if "end" not in page:
            break
        params["from"] = page["end"]
    return list(reversed(chunk))


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


@pytest.mark.parametrize("visibility", ["shared", "joined"])
async def test_backfill_history_from_before_the_join(
    two: tuple[Client, Client], visibility: str
) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(
        preset="public_chat",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": visibility},
            }
        ],
    )
    sent = [f"before {i}" for i in range(30)]
    for text in sent:
        await alice.say(room_id, text)
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    status, synced = await bob.get("/v3/sync")
    assert status == 200
    since = synced["next_batch"]
    await alice.say(room_id, "after")
    await eventually(lambda: _has(bob, room_id, "after"))

    events = await history(bob, room_id, limit=20)
    if visibility == "shared":
        assert texts(events) == [*sent, "after"]
        assert events[0]["type"] == "m.room.create"  # outliers learnt on joining, placed
    else:
        assert texts(events) == ["after"]
    # Paging again finds the same history (nothing is backfilled twice).
    again = await history(bob, room_id, limit=50)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in events]

    # Backfilled events never reach an incremental sync.
    status, synced = await bob.get("/v3/sync", since=since, timeout="0")
    assert status == 200
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    assert texts(timeline) == ["after"]


async def _has(user: RoomUser, room_id: str, text: str) -> bool:
    status, page = await user.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="5")
    return status == 200 and text in texts(page["chunk"])


async def test_knocking_on_a_remote_room(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(
        name="Knock here",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    server_a = hs_of(a).server_name
    answer = await bob.ok("POST", f"/knock/{room_id}?server_name={server_a}", {"reason": "hi"})
    assert answer == {"room_id": room_id}
    assert await membership(alice, room_id, bob.user_id) == "knock"
    entry = await section(bob, "knock", room_id)
    assert entry is not None
    events = entry["knock_state"]["events"]
    assert by_type(events)["m.room.name"]["content"] == {"name": "Knock here"}
    assert by_type(events)["m.room.join_rules"]["content"] == {"join_rule": "knock"}
    mine = [e for e in events if e.get("state_key") == bob.user_id]
    assert [e["content"]["membership"] for e in mine] == ["knock"]

    await alice.invite(room_id, bob.user_id)

    async def invited() -> bool:
        return await section(bob, "invite", room_id) is not None

    await eventually(invited)
    await bob.join(room_id)
    assert await membership(alice, room_id, bob.user_id) == "join"


async def test_knocking_needs_a_server_that_holds_the_room(two: tuple[Client, Client]) -> None:
    _, b = two
    bob = await RoomUser.make(b, "bob")
    resp = await bob.client.post(
        "/_matrix/client/v3/knock/!nowhere:127.0.0.1:1", headers=bob.headers, json={}
    )
    assert resp.status in (404, 502)
    assert (await resp.json())["errcode"] in ("M_NOT_FOUND", "M_UNKNOWN")


async def test_paging_back_when_the_resident_server_is_gone(two: tuple[Client, Client]) -> None:
    a, b = two
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await alice.say(room_id, "unreachable history")
    await bob.ok("POST", f"/join/{room_id}?server_name={hs_of(a).server_name}")
    await a.close()  # nobody left to backfill from: /messages answers with what we hold
    events = await history(bob, room_id)
    assert texts(events) == []
    assert [e["type"] for e in events] == ["m.room.member"]
