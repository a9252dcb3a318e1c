"""The same scripted sliding sync session (MSC4186) against Synapse and against ours,
compared field by field on a small account: a named room, a DM, an invite, then a
message arriving in a window. Differences kept on purpose are listed in KEPT."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, session

pytestmark = pytest.mark.interop

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
REQUEST = {
    "lists": {
        "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 2,
            "required_state": [
                ["m.room.name", ""],
                ["m.room.encryption", ""],
                ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"],
                ["m.room.join_rules", ""],
            ],
        }
    }
}
# Differences from Synapse we keep on purpose, by path. Notification counts: ours
# are counted as each event is written; Synapse's lag behind in a background summary,
# so on this quick session Synapse says 0 where ours already counts bob's messages.
KEPT = {f"/{answer}/rooms/{room}/counts" for answer in (0, 1) for room in ("named", "dm")}


async def sliding_sync(user: User, pos: str | None = None) -> Any:
    params = {"timeout": "0", **({"pos": pos} if pos else {})}
    async with user.http.post(
        user.base + PATH, json=REQUEST, params=params, headers=user.headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def script(http: Any, server: SynapseInstance | Homeserver) -> list[Any]:
    """Runs the session on one server; the answers with ids replaced by names."""
    alice = await User.register(http, server, "alice")
    bob = await User.register(http, server, "bob")
    names = {alice.user_id: "@alice", bob.user_id: "@bob"}
    named = await alice.create_room(name="Named", preset="public_chat")
    await bob.join(named)
    await bob.say(named, "one")
    dm = await alice.create_room(
        preset="trusted_private_chat", invite=[bob.user_id], is_direct=True
    )
    await bob.join(dm)
    await bob.say(dm, "dm hi")
    await alice.ok(
        "PUT", f"/user/{quote(alice.user_id)}/account_data/m.direct", {bob.user_id: [dm]}
    )
    invite = await bob.create_room(name="Invite", preset="private_chat", invite=[alice.user_id])
    await alice.say(named, "two")
    names.update({named: "named", dm: "dm", invite: "invite"})
    first = await sliding_sync(alice)
    await bob.say(named, "three")
    second = await sliding_sync(alice, first["pos"])
    return [normalise(first, names), normalise(second, names)]


def normalise(answer: Any, names: dict[str, str]) -> Any:
    def name(value: str) -> str:
        return names.get(value, value)

    lists = {
        key: {
            "count": value["count"],
            "ops": [
                [op["op"], op["range"], [name(r) for r in op["room_ids"]]] for op in value["ops"]
            ],
        }
        for key, value in answer["lists"].items()
    }
    rooms = {}
    for room_id, room in answer["rooms"].items():
        entry: dict[str, Any] = {"keys": sorted(room)}
        for key in ("name", "initial", "joined_count", "invited_count", "limited", "num_live"):
            entry[key] = room.get(key)
        entry["is_dm"] = room.get("is_dm", False)
        entry["heroes"] = [name(h["user_id"]) for h in room.get("heroes", [])]
        entry["timeline"] = [
            (e["type"], name(e.get("state_key", "")), e["content"].get("body"))
            for e in room.get("timeline", [])
        ]
        entry["required_state"] = sorted(
            (e["type"], name(e["state_key"])) for e in room.get("required_state", [])
        )
        entry["invite_state"] = sorted(
            (e["type"], name(e.get("state_key", ""))) for e in room.get("invite_state", [])
        )
        entry["counts"] = (room["notification_count"], room["highlight_count"])
        rooms[name(room_id)] = entry
    return {"lists": lists, "rooms": rooms}


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            out += differences(ours.get(key), theirs.get(key), f"{path}/{key}")
        return out
    return [] if ours == theirs else [f"{path}: ours {ours!r}, Synapse {theirs!r}"]


async def test_same_session_same_answers(synapse: SynapseInstance, our_server: Homeserver) -> None:
    async with session() as http:
        theirs = await script(http, synapse)
        ours = await script(http, our_server)
    # Under load, Synapse sometimes ranks the invite (bumped when it arrived) after the
    # DM (bumped by an earlier message): the windows are compared as sets, and ours is
    # held to the recency rule itself.
    for answer in ours:
        assert answer["lists"]["all"]["ops"][0][2] == ["named", "invite", "dm"]
    found = [
        d
        for i, (mine, synapses) in enumerate(zip(ours, theirs, strict=True))
        for d in differences(unordered(mine), unordered(synapses), f"/{i}")
        if d.split(":")[0] not in KEPT
    ]
    assert not found, "\n".join(found)


def unordered(answer: Any) -> Any:
    """The answer with each list window's rooms as a sorted list."""
    lists = {
        key: {**value, "ops": [[op, rng, sorted(rooms)] for op, rng, rooms in value["ops"]]}
        for key, value in answer["lists"].items()
    }
    return {**answer, "lists": lists}
