"""Hand-built room DAGs for the auth rules and state resolution tests.

Events are unsigned and get the ids the test gives them ("$A"); their auth events are
selected from the state of the branch they are sent on, as a real server would. A
`Branch` is a line of history: `fork()` starts a second one from the same point.
"""

from __future__ import annotations

from typing import Any

import pytest

from federation.auth_rules import AuthError, auth_types_for, check_auth
from federation.events import CREATE, JOIN_RULES, MEMBER, POWER_LEVELS, Event, StateKey
from federation.room_versions import EventIdFormat, RoomVersion, get_room_version

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"
EVE = "@eve:e.test"


class Room:
    """All events of one room, by id, plus a clock for origin_server_ts."""

    def __init__(self, version: str, creator: str = ALICE, **create_content: Any) -> None:
        self.version: RoomVersion = get_room_version(version)
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.clock = 1000
        if self.version.room_id_from_create_event:
            self.room_id = "!create"
        else:
            self.room_id = "!room:" + creator.partition(":")[2]
        content: dict[str, Any] = {"room_version": version, **create_content}
        if not self.version.msc2175_implicit_room_creator:
            content.setdefault("creator", creator)
        self.main = Branch(self, {}, [], 0)
        self.create = self.main.send(self.ev("create"), CREATE, creator, content, "")

    def ev(self, name: str) -> str:
        """An event id in this room version's shape: v1/v2 ids carry a server name."""
        if self.version.event_id_format is EventIdFormat.V1:
            return f"${name}:a.test"
        return f"${name}"

    def tick(self) -> int:
        self.clock += 1
        return self.clock


class Branch:
    """A line of history in a room: its state and its head."""

    def __init__(self, room: Room, state: dict[StateKey, str], heads: list[str], depth: int):
        self.room = room
        self.state = state
        self.heads = heads
        self.depth = depth

    def fork(self) -> Branch:
        return Branch(self.room, dict(self.state), list(self.heads), self.depth)

    def auth_state(self) -> dict[StateKey, Event]:
        """The branch's state as events: what `check_auth` takes."""
        return {key: self.room.events[eid] for key, eid in self.state.items()}

    def build(
        self,
        event_id: str,
        event_type: str,
        sender: str,
        content: dict[str, Any] | None = None,
        state_key: str | None = None,
        *,
        auth: list[str] | None = None,
        prev: list[str] | None = None,
        ts: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        """An event on top of this branch, registered in the room but not applied."""
        room = self.room
        content = {} if content is None else content
        if auth is None:
            types = auth_types_for(room.version, event_type, sender, state_key, content)
            auth = [self.state[key] for key in sorted(types) if key in self.state]
        prev = list(self.heads) if prev is None else prev
        refs = room.version.event_id_format is EventIdFormat.V1
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "auth_events": [[eid, {}] for eid in auth] if refs else auth,
            "prev_events": [[eid, {}] for eid in prev] if refs else prev,
            "depth": self.depth + 1,
            "origin_server_ts": room.tick() if ts is None else ts,
        }
        if not (room.version.room_id_from_create_event and event_type == CREATE):
            pdu["room_id"] = room.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra or {})
        event = Event(pdu, room.version, event_id)
        room.events[event_id] = event
        return event

    def apply(self, event: Event) -> Event:
        """Make `event` the head of this branch (and part of its state)."""
        self.heads = [event.event_id]
        self.depth = max(self.depth, event.depth)
        if event.state_key is not None:
            self.state[event.state_tuple] = event.event_id
        return event

    def send(self, *args: Any, **kwargs: Any) -> Event:
        return self.apply(self.build(*args, **kwargs))

    def member(
        self, name: str, sender: str, membership: str, target: str | None = None, **content: Any
    ) -> Event:
        target = sender if target is None else target
        return self.send(
            self.room.ev(name), MEMBER, sender, {"membership": membership, **content}, target
        )

    def power_levels(self, name: str, sender: str, users: dict[str, int], **content: Any) -> Event:
        return self.send(self.room.ev(name), POWER_LEVELS, sender, {"users": users, **content}, "")

    def join_rules(self, name: str, sender: str, rule: str, **content: Any) -> Event:
        return self.send(self.room.ev(name), JOIN_RULES, sender, {"join_rule": rule, **content}, "")


def new_room(
    version: str, join_rule: str = "public", admins: dict[str, int] | None = None, **pl: Any
) -> Room:
    """A room as createRoom makes it: create, the creator's join, power levels (the
    creator at 100 unless v12 makes them a creator) and join rules."""
    room = Room(version)
    main = room.main
    main.member("alice-join", ALICE, "join")
    users = dict(admins or {})
    if not room.version.privileged_creators:
        users.setdefault(ALICE, 100)
    main.power_levels("pl", ALICE, users, **pl)
    main.join_rules("jr", ALICE, join_rule)
    return room


# -- checking events against a branch's state ---------------------------------------------


def allowed(event: Event, branch: Branch) -> None:
    check_auth(event, branch.auth_state())


def refused(event: Event, branch: Branch, reason: str | None = None) -> None:
    with pytest.raises(AuthError, match=reason):
        check_auth(event, branch.auth_state())


def joined(version: str, *users: str, join_rule: str = "public", **pl: object) -> Room:
    room = new_room(version, join_rule, **pl)
    for i, user in enumerate(users):
        if join_rule != "public":
            room.main.member(f"inv{i}", ALICE, "invite", user)
        room.main.member(f"join{i}", user, "join")
    return room
