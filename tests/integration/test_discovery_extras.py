"""The small discovery endpoints operators and clients ask for: the MSC1929 support
well-known (Synapse's `admin_contact`, our `support.*`) and MSC2666 mutual rooms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import RoomUser

SUPPORT = "/.well-known/matrix/support"
UNSTABLE_MUTUAL = "/unstable/uk.half-shot.msc2666/user/mutual_rooms"


async def test_support_well_known(homeserver_client: Callable[..., Any]) -> None:
    plain = await homeserver_client()
    resp = await plain.get(SUPPORT)
    assert resp.status == 404
    assert (await resp.json())["errcode"] == "M_NOT_FOUND"

    synapse_style = await homeserver_client(admin_contact="mailto:admin@example.org")
    resp = await synapse_style.get(SUPPORT)
    assert resp.status == 200
    assert await resp.json() == {
        "contacts": [{"email_address": "admin@example.org", "role": "m.role.admin"}]
    }

    contacts = [
        {"matrix_id": "@admin:example.org", "role": "m.role.admin"},
        {"email_address": "security@example.org", "role": "m.role.security"},
    ]
    ours = await homeserver_client(
        admin_contact="mailto:ignored@example.org",
        **{"support.contacts": contacts, "support.page": "https://example.org/help"},
    )
    resp = await ours.get(SUPPORT)
    assert await resp.json() == {"contacts": contacts, "support_page": "https://example.org/help"}


async def test_mutual_rooms(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    shared = []
    for _ in range(3):
        room_id = await alice.create_room(preset="public_chat")
        await bob.join(room_id)
        shared.append(room_id)
    await alice.create_room()  # alice alone
    left = await alice.create_room(preset="public_chat")
    await bob.join(left)
    await bob.leave(left)
    shared.sort()

    for path in ("/v1/mutual_rooms", "/v1/user/mutual_rooms", UNSTABLE_MUTUAL):
        status, body = await alice.get(path, user_id=bob.user_id)
        assert (status, body) == (200, {"joined": shared, "count": 3}), path

    status, body = await alice.get("/v1/mutual_rooms", user_id=bob.user_id, **{"from": shared[0]})
    assert (status, body) == (200, {"joined": shared[1:], "count": 3})
    status, body = await alice.get("/v1/mutual_rooms", user_id="@nobody:example.org")
    assert (status, body) == (200, {"joined": [], "count": 0})

    status, body = await alice.get("/v1/mutual_rooms", user_id=alice.user_id)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await alice.get("/v1/mutual_rooms", user_id="bob")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await alice.get("/v1/mutual_rooms")
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await alice.get("/v1/mutual_rooms", user_id=bob.user_id, **{"from": "x"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    resp = await client.get(f"/_matrix/client{UNSTABLE_MUTUAL}", params={"user_id": bob.user_id})
    assert resp.status == 401

    status, versions = await alice.get("/versions")
    assert versions["unstable_features"]["uk.half-shot.msc2666.query_mutual_rooms"] is True
