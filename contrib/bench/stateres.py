"""Benchmark state resolution: two forks of a 10,000-member room, 200 conflicted events.

    python contrib/bench/stateres.py [--members N] [--forked N] [--runs N] [--version V]

The room is created, made public and joined by `members` users; then one fork changes
the power levels and has `forked / 2 - 1` members leave, the other changes the power
levels too and has as many other members change their display name. Both forks' states
are resolved `runs` times; the script prints the median and best times in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Collection, Mapping
from typing import Any

from federation.auth_rules import auth_types_for
from federation.events import Event, StateKey
from federation.room_versions import RoomVersion, get_room_version
from federation.stateres import resolve_state

ADMIN = "@admin:bench.test"


class _Room:
    """Just enough of a room to write events into: ids, auth selection, state."""

    def __init__(self, version: RoomVersion) -> None:
        self.version = version
        self.events: dict[str, Event] = {}
        self.clock = 0
        self.room_id = "!create" if version.room_id_from_create_event else "!room:bench.test"

    def send(
        self,
        state: dict[StateKey, str],
        event_id: str,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str,
        prev: str | None,
    ) -> str:
        types = auth_types_for(self.version, event_type, sender, state_key, content)
        self.clock += 1
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "state_key": state_key,
            "content": content,
            "auth_events": [state[key] for key in sorted(types) if key in state],
            "prev_events": [prev] if prev else [],
            "depth": self.clock,
            "origin_server_ts": 1_700_000_000_000 + self.clock,
        }
        if not (self.version.room_id_from_create_event and event_type == "m.room.create"):
            pdu["room_id"] = self.room_id
        self.events[event_id] = Event(pdu, self.version, event_id)
        state[(event_type, state_key)] = event_id
        return event_id


def build(version: RoomVersion, members: int, forked: int) -> tuple[_Room, list[dict]]:
    room = _Room(version)
    state: dict[StateKey, str] = {}
    creator = {} if version.msc2175_implicit_room_creator else {"creator": ADMIN}
    last = room.send(state, "$create", "m.room.create", ADMIN, creator, "", None)
    last = room.send(state, "$admin", "m.room.member", ADMIN, {"membership": "join"}, ADMIN, last)
    admin = {} if version.privileged_creators else {ADMIN: 100}
    last = room.send(state, "$pl", "m.room.power_levels", ADMIN, {"users": admin}, "", last)
    last = room.send(state, "$jr", "m.room.join_rules", ADMIN, {"join_rule": "public"}, "", last)
    users = [f"@user{i}:server{i % 50}.test" for i in range(members - len(state))]
    for i, user in enumerate(users):
        last = room.send(
            state, f"$join{i}", "m.room.member", user, {"membership": "join"}, user, last
        )

    per_fork = forked // 2 - 1
    fork_a, fork_b = dict(state), dict(state)
    head = room.send(
        fork_a, "$pl-a", "m.room.power_levels", ADMIN, {"users": {**admin, users[0]: 50}}, "", last
    )
    for user in users[1 : 1 + per_fork]:
        head = room.send(
            fork_a, f"$leave-{user}", "m.room.member", user, {"membership": "leave"}, user, head
        )
    head = room.send(
        fork_b, "$pl-b", "m.room.power_levels", ADMIN, {"users": {**admin, users[1]: 50}}, "", last
    )
    for user in users[1 + per_fork : 1 + 2 * per_fork]:
        content = {"membership": "join", "displayname": "renamed"}
        head = room.send(fork_b, f"$rename-{user}", "m.room.member", user, content, user, head)
    return room, [fork_a, fork_b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--forked", type=int, default=200)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--version", default="10")
    args = parser.parse_args()

    version = get_room_version(args.version)
    room, state_sets = build(version, args.members, args.forked)
    events = room.events

    async def fetch(ids: Collection[str]) -> Mapping[str, Event]:
        return {eid: events[eid] for eid in ids if eid in events}

    async def run() -> list[float]:
        timings = []
        for _ in range(args.runs):
            start = time.perf_counter()
            await resolve_state(version, state_sets, fetch)
            timings.append((time.perf_counter() - start) * 1000)
        return timings

    timings = asyncio.run(run())
    conflicted = sum(
        1
        for key in state_sets[0].keys() | state_sets[1].keys()
        if state_sets[0].get(key) != state_sets[1].get(key)
    )
    print(
        f"room v{version.identifier}: {len(state_sets[0])} state events, "
        f"{conflicted} conflicted keys, {args.runs} runs: "
        f"median {statistics.median(timings):.1f} ms, min {min(timings):.1f} ms"
    )


if __name__ == "__main__":
    main()
