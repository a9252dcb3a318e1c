"""A large sync reads on several connections at once (timelines in slices, rendering's
lookups, notification counts): its answer must be the one read in turn."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.services.sync import rooms as sync_rooms
from homeserver.services.sync import unread as sync_unread
from tests.integration.test_sync import Client, client, new_user

__all__ = ["client"]


def _stable(body: Any) -> Any:
    """The answer without what changes between two syncs of the same state."""
    if isinstance(body, dict):
        return {
            k: _stable(v) for k, v in body.items() if k not in ("age", "next_batch", "presence")
        }
    if isinstance(body, list):
        return [_stable(v) for v in body]
    return body


async def test_sliced_reads_answer_as_reads_in_turn(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_ids = [await alice.create_room(name=f"Room {i}", preset="public_chat") for i in range(5)]
    for i, room_id in enumerate(room_ids):
        await bob.join(room_id)
        for n in range(i + 1):
            await bob.send(room_id, f"@alice hello {n} in {i}")
    await alice.send(room_ids[0], "mine")  # a transaction id to find
    await alice.call(
        "PUT", f"/user/{alice.user_id}/rooms/{room_ids[1]}/tags/u.work", {"order": 0.5}
    )
    redacted = await bob.send(room_ids[2], "oops")
    await bob.call("PUT", f"/rooms/{room_ids[2]}/redact/{redacted}/r1", {})

    in_turn = await alice.sync()
    # Every read of more than one room now goes in slices on lent connections.
    monkeypatch.setattr(sync_rooms, "ROOMS_PER_READ", 1)
    monkeypatch.setattr(sync_unread, "ROOMS_PER_READ", 1)
    at_once = await alice.sync()

    assert _stable(at_once) == _stable(in_turn)
    joined = at_once["rooms"]["join"]
    assert set(joined) == set(room_ids)
    counts = [joined[r]["unread_notifications"]["notification_count"] for r in room_ids]
    assert counts == [1, 2, 4, 4, 5]  # the redacted message still counts
    mine = [e for e in joined[room_ids[0]]["timeline"]["events"] if e["sender"] == alice.user_id]
    assert "transaction_id" in mine[-1]["unsigned"]
    assert joined[room_ids[1]]["account_data"]["events"][0]["type"] == "m.tag"
