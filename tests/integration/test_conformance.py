"""Responses in the shapes the spec's schemas give them, as clients parse them."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser


async def test_joined_members_omit_unset_display_names_and_avatars(
    open_client: TestClient[Any, Any],
) -> None:
    """Both are strings in the schema: absent when unset, never null."""
    alice = await RoomUser.make(open_client, "alice")
    bob = await RoomUser.make(open_client, "bob")
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice"})
    await alice.ok("PUT", f"/profile/{alice.user_id}/avatar_url", {"avatar_url": "mxc://a/b"})
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    status, body = await bob.get(f"/v3/rooms/{room}/joined_members")
    assert status == 200
    assert body["joined"] == {
        alice.user_id: {"display_name": "Alice", "avatar_url": "mxc://a/b"},
        bob.user_id: {},
    }
