"""Room upgrades: the replacement room continues the old one (state, power, aliases,
publication) and the old room points at it and is closed to ordinary members."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import RoomUser, call

Client = TestClient[Any, Any]
PLAIN_HISTORY = {"body": "history", "mimetype": "text/plain"}


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    result: Client = await homeserver_client(**{"rate_limits.enabled": False})
    return result


async def state_of(user: RoomUser, room_id: str, event_type: str) -> Any:
    status, body = await user.get(f"/v3/rooms/{room_id}/state/{event_type}/")
    return body if status == 200 else None


@pytest.mark.parametrize(
    ("old", "new"), [("1", "6"), ("6", "10"), ("9", "11"), ("10", "12"), ("12", "12"), ("12", "11")]
)
async def test_upgrade_copies_state_and_moves_aliases(client: Client, old: str, new: str) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(
        room_version=old,
        visibility="public",
        preset="public_chat",
        name="Old hall",
        topic="history",
        room_alias_name="hall",
    )
    await bob.join(room_id)
    await alice.state(room_id, "m.room.avatar", {"url": "mxc://test.local/a"})
    await alice.state(room_id, "m.space.child", {"via": ["test.local"]}, key="!child:test.local")
    power = await state_of(alice, room_id, "m.room.power_levels")
    power["users"][bob.user_id] = 40
    await alice.state(room_id, "m.room.power_levels", power)

    status, body = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/upgrade",
        {"new_version": new},
        headers=alice.headers,
    )
    assert status == 200, body
    new_id = body["replacement_room"]
    assert new_id != room_id

    create = await state_of(alice, new_id, "m.room.create")
    assert create["room_version"] == new
    assert create["predecessor"]["room_id"] == room_id
    assert create["predecessor"]["event_id"].startswith("$")
    for event_type, expected in (
        ("m.room.name", {"name": "Old hall"}),
        ("m.room.topic", {"topic": "history", "m.topic": {"m.text": [PLAIN_HISTORY]}}),
        ("m.room.avatar", {"url": "mxc://test.local/a"}),
        ("m.room.join_rules", {"join_rule": "public"}),
        ("m.room.canonical_alias", {"alias": "#hall:test.local"}),
    ):
        assert await state_of(alice, new_id, event_type) == expected, event_type
    status, child = await alice.get(f"/v3/rooms/{new_id}/state/m.space.child/!child:test.local")
    assert status == 200 and child == {"via": ["test.local"]}
    new_power = await state_of(alice, new_id, "m.room.power_levels")
    assert new_power["users"].get(bob.user_id) == 40
    if new == "12":
        assert alice.user_id not in new_power["users"]
    else:
        assert new_power["users"][alice.user_id] == 100

    # Aliases and publication moved; the old room is tombstoned and closed.
    status, body = await call(client, "GET", f"/v3/directory/room/{quote('#hall:test.local')}")
    assert body["room_id"] == new_id
    status, body = await call(client, "GET", f"/v3/directory/list/room/{new_id}")
    assert body == {"visibility": "public"}
    status, body = await call(client, "GET", f"/v3/directory/list/room/{room_id}")
    assert body == {"visibility": "private"}
    tombstone = await state_of(alice, room_id, "m.room.tombstone")
    assert tombstone["replacement_room"] == new_id and tombstone["body"]
    old_power = await state_of(alice, room_id, "m.room.power_levels")
    assert old_power["events_default"] == 50 and old_power["invite"] == 50
    status, body = await call(
        client,
        "PUT",
        f"/v3/rooms/{room_id}/send/m.room.message/late",
        {"msgtype": "m.text", "body": "still here?"},
        headers=bob.headers,
    )
    assert status == 403
    # Bob follows the tombstone into the public replacement.
    await bob.join(new_id)


async def test_upgrade_to_v12_with_additional_creators(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(room_version="10", preset="public_chat")
    await bob.join(room_id)
    status, body = await call(
        client,
        "POST",
        f"/r0/rooms/{room_id}/upgrade",
        {"new_version": "12", "additional_creators": [bob.user_id]},
        headers=alice.headers,
    )
    assert status == 200, body
    new_id = body["replacement_room"]
    create = await state_of(alice, new_id, "m.room.create")
    assert create["additional_creators"] == [bob.user_id]
    assert "event_id" in create["predecessor"]
    power = await state_of(alice, new_id, "m.room.power_levels")
    assert bob.user_id not in power["users"] and alice.user_id not in power["users"]


async def test_upgrade_denials(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    eve = await RoomUser.make(client, "eve")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    path = f"/v3/rooms/{room_id}/upgrade"

    status, body = await call(client, "POST", path, {"new_version": "11"}, headers=bob.headers)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await call(client, "POST", path, {"new_version": "11"}, headers=eve.headers)
    assert status == 403
    status, body = await call(client, "POST", path, {"new_version": "99"}, headers=alice.headers)
    assert status == 400 and body["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    status, body = await call(client, "POST", path, {}, headers=alice.headers)
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await call(
        client,
        "POST",
        path,
        {"new_version": "12", "additional_creators": "bob"},
        headers=alice.headers,
    )
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await call(client, "POST", path, data=b"{", headers=alice.headers)
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    status, body = await call(
        client,
        "POST",
        "/v3/rooms/!nope:test.local/upgrade",
        {"new_version": "11"},
        headers=alice.headers,
    )
    assert status == 404
    # Nothing was tombstoned by the refusals.
    assert await state_of(alice, room_id, "m.room.tombstone") is None


async def test_redacted_state_is_not_resurrected(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    room_id = await alice.create_room(preset="private_chat", topic="leaked secret")
    status, room_state = await alice.get(f"/v3/rooms/{room_id}/state")
    topic_event = next(e for e in room_state if e["type"] == "m.room.topic")
    await alice.redact(room_id, topic_event["event_id"])
    status, body = await call(
        client,
        "POST",
        f"/v3/rooms/{room_id}/upgrade",
        {"new_version": "11"},
        headers=alice.headers,
    )
    assert status == 200, body
    assert await state_of(alice, body["replacement_room"], "m.room.topic") is None
    assert await state_of(alice, body["replacement_room"], "m.room.join_rules") == {
        "join_rule": "invite"
    }


async def upgrade(user: RoomUser, room_id: str, version: str = "11") -> str:
    status, body = await call(
        user.client,
        "POST",
        f"/v3/rooms/{room_id}/upgrade",
        {"new_version": version},
        headers=user.headers,
    )
    assert status == 200, body
    return str(body["replacement_room"])


@pytest.mark.parametrize("version", ["10", "12"])
async def test_bans_carry_over_to_the_replacement_room(client: Client, version: str) -> None:
    alice = await RoomUser.make(client, "alice")
    mallory = await RoomUser.make(client, "mallory")
    room_id = await alice.create_room(preset="public_chat")
    await mallory.join(room_id)
    await alice.ok("POST", f"/rooms/{room_id}/ban", {"user_id": mallory.user_id, "reason": "spam"})
    new_id = await upgrade(alice, room_id, version)
    status, member = await alice.get(f"/v3/rooms/{new_id}/state/m.room.member/{mallory.user_id}")
    assert (status, member) == (200, {"membership": "ban", "reason": "spam"})
    status, body = await call(
        client, "POST", f"/v3/rooms/{new_id}/join", {}, headers=mallory.headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_push_rules_for_the_old_room_follow_its_members(client: Client) -> None:
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    rules = "/pushrules/global"
    mute = {
        "actions": [],
        "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room_id}],
    }
    for user in (alice, bob):
        await user.ok("PUT", f"{rules}/override/{room_id}", mute)
        await user.ok("PUT", f"{rules}/room/{room_id}", {"actions": ["dont_notify"]})
    await bob.ok("PUT", f"{rules}/room/{room_id}/enabled", {"enabled": False})
    await bob.ok("PUT", f"{rules}/override/unrelated", {"actions": [], "conditions": []})

    new_id = await upgrade(alice, room_id)

    async def own_rules(user: RoomUser) -> dict[str, list[dict[str, Any]]]:
        status, body = await user.get(f"/v3{rules}/")
        assert status == 200
        return {kind: [r for r in body[kind] if not r["default"]] for kind in ("override", "room")}

    copied = await own_rules(alice)
    assert [r["rule_id"] for r in copied["override"]] == [new_id, room_id]
    assert copied["override"][0]["conditions"][0]["pattern"] == new_id
    assert [r["rule_id"] for r in copied["room"]] == [new_id, room_id]

    # Bob's rules are copied when he follows the tombstone, not before.
    assert [r["rule_id"] for r in (await own_rules(bob))["room"]] == [room_id]
    await bob.join(new_id)
    bobs = await own_rules(bob)
    assert [r["rule_id"] for r in bobs["override"]] == ["unrelated", new_id, room_id]
    assert [(r["rule_id"], r["enabled"]) for r in bobs["room"]] == [
        (new_id, False),
        (room_id, False),
    ]
