"""Chatting with Synapse users, checked through each side's client API: invites both
ways, messages, edits, redactions, typing and read receipts both ways, profiles across
servers, leaving, bans enforced by both servers, and joins by a remote alias."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, ephemeral, eventually, invited_to, left, session

pytestmark = pytest.mark.interop


async def _joined(watcher: User, room_id: str, user_id: str, expected: str = "join") -> None:
    async def check() -> bool:
        return await watcher.membership(room_id, user_id) == expected

    await eventually(check)


async def test_invites_both_ways(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")

        ours = await alice.create_room(preset="private_chat")
        await alice.ok("POST", f"/rooms/{quote(ours)}/invite", {"user_id": sam.user_id})
        await sam.sync_until(lambda body: invited_to(body, ours))
        status, body = await sam.join(ours)
        assert status == 200, body
        await _joined(alice, ours, sam.user_id)

        theirs = await sam.create_room(preset="private_chat")
        await sam.ok("POST", f"/rooms/{quote(theirs)}/invite", {"user_id": alice.user_id})
        synced = await alice.sync_until(lambda body: invited_to(body, theirs))
        stripped = synced["rooms"]["invite"][theirs]["invite_state"]["events"]
        assert any(
            e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in stripped
        )
        status, body = await alice.join(theirs)
        assert status == 200, body
        await _joined(sam, theirs, alice.user_id)
        await alice.say(theirs, "thanks for the invite")
        await eventually(lambda: sam.sees(theirs, "thanks for the invite"))


async def _shared_room(alice: User, sam: User, our_server: Homeserver) -> str:
    room_id = await alice.create_room(preset="public_chat")
    status, body = await sam.join(room_id, our_server.server_name)
    assert status == 200, body
    await _joined(alice, room_id, sam.user_id)
    return room_id


def _edit(event_id: str, text: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"* {text}",
        "m.new_content": {"msgtype": "m.text", "body": text},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


async def _edited_and_redacted(reader: User, room_id: str, original: str, gone: str) -> bool:
    """The reader sees the edit of `original` and the redaction of `gone`."""
    events = {e["event_id"]: e for e in await reader.timeline(room_id)}
    edits = [
        e
        for e in events.values()
        if e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"]["event_id"] == original
    ]
    redactions = [e for e in events.values() if e["type"] == "m.room.redaction"]
    return (
        original in events
        and len(edits) == 1
        and gone in events
        and events[gone]["content"] == {}
        and any(r.get("redacts", r["content"].get("redacts")) == gone for r in redactions)
    )


async def _one_way(writer: User, reader: User, room_id: str) -> None:
    """`writer` sends, edits, redacts, types and reads; `reader` sees each of them."""
    first = await writer.say(room_id, f"typo from {writer.user_id}")
    doomed = await writer.say(room_id, f"regret from {writer.user_id}")
    await writer.send(room_id, _edit(first, f"fixed from {writer.user_id}"))
    await writer.ok("PUT", f"/rooms/{quote(room_id)}/redact/{quote(doomed)}/r1")
    await eventually(lambda: _edited_and_redacted(reader, room_id, first, doomed))

    await reader.sync_until(lambda _: True)  # from now on, only what is new
    await writer.ok(
        "PUT",
        f"/rooms/{quote(room_id)}/typing/{quote(writer.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    await reader.sync_until(
        lambda body: any(
            writer.user_id in e["content"]["user_ids"] for e in ephemeral(body, room_id, "m.typing")
        )
    )
    await writer.ok("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(first)}", {})
    await reader.sync_until(
        lambda body: any(
            writer.user_id in e["content"].get(first, {}).get("m.read", {})
            for e in ephemeral(body, room_id, "m.receipt")
        )
    )


async def test_messages_edits_redactions_typing_receipts_both_ways(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        room_id = await _shared_room(alice, sam, our_server)
        await _one_way(alice, sam, room_id)
        await _one_way(sam, alice, room_id)


async def test_profiles_across_servers(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        await alice.ok(
            "PUT", f"/profile/{quote(alice.user_id)}/displayname", {"displayname": "Alice A"}
        )
        await sam.ok("PUT", f"/profile/{quote(sam.user_id)}/displayname", {"displayname": "Sam S"})

        assert (await sam.ok("GET", f"/profile/{quote(alice.user_id)}"))["displayname"] == (
            "Alice A"
        )
        assert (await alice.ok("GET", f"/profile/{quote(sam.user_id)}"))["displayname"] == "Sam S"
        field = await alice.ok("GET", f"/profile/{quote(sam.user_id)}/displayname")
        assert field == {"displayname": "Sam S"}
        nobody = f"@nobody:{synapse.server_name}"
        status, body = await alice.call("GET", f"/profile/{quote(nobody)}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_leaving_and_bans_on_both_sides(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")

        ours = await _shared_room(alice, sam, our_server)
        await sam.ok("POST", f"/rooms/{quote(ours)}/leave")
        await _joined(alice, ours, sam.user_id, "leave")
        status, body = await sam.join(ours, our_server.server_name)
        assert status == 200, body
        await _joined(alice, ours, sam.user_id)
        await alice.ok("POST", f"/rooms/{quote(ours)}/ban", {"user_id": sam.user_id})
        await sam.sync_until(lambda body: left(body, ours))
        # Synapse no longer has a user in the room: its rejoin asks us, and we refuse.
        status, body = await sam.join(ours, our_server.server_name)
        assert status == 403, body
        assert await alice.membership(ours, sam.user_id) == "ban"

        theirs = await sam.create_room(preset="public_chat")
        status, body = await alice.join(theirs, synapse.server_name)
        assert status == 200, body
        await _joined(sam, theirs, alice.user_id)
        await alice.ok("POST", f"/rooms/{quote(theirs)}/leave")
        await _joined(sam, theirs, alice.user_id, "leave")
        status, body = await alice.join(theirs, synapse.server_name)
        assert status == 200, body
        await _joined(sam, theirs, alice.user_id)
        await sam.ok("POST", f"/rooms/{quote(theirs)}/ban", {"user_id": alice.user_id})
        await alice.sync_until(lambda body: left(body, theirs))
        status, body = await alice.join(theirs, synapse.server_name)
        assert status == 403, body
        await sam.say(theirs, "not for alice")
        assert await sam.membership(theirs, alice.user_id) == "ban"


async def test_joining_by_remote_alias(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        theirs = await sam.create_room(preset="public_chat", room_alias_name="synapse-lobby")
        status, body = await alice.join(f"#synapse-lobby:{synapse.server_name}")
        assert (status, body.get("room_id")) == (200, theirs), body
        ours = await alice.create_room(preset="public_chat", room_alias_name="our-lobby")
        status, body = await sam.join(f"#our-lobby:{our_server.server_name}")
        assert (status, body.get("room_id")) == (200, ours), body
        await _joined(alice, ours, sam.user_id)
        await _joined(sam, theirs, alice.user_id)
