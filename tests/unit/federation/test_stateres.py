"""State resolution on hand-built forks: the classic races, v1 against v2, and v2.1."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.auth_rules import JOIN_RULES_KEY, MEMBER, POWER_LEVELS_KEY, StateKey
from federation.events import Event
from federation.stateres import resolve_state, resolve_state_in_memory
from tests.unit.federation.dag import ALICE, BOB, CAROL, DAVE, EVE, Branch, Room, new_room

TOPIC: StateKey = ("m.room.topic", "")
NAME: StateKey = ("m.room.name", "")


def resolve(room: Room, *branches: Branch, rejected: Collection[str] = frozenset()) -> dict:
    return resolve_state_in_memory(
        room.version, [b.state for b in branches], room.events, rejected=rejected
    )


def joined(version: str, *users: str, **pl: object) -> Room:
    room = new_room(version, **pl)  # type: ignore[arg-type]
    for user in users:
        room.main.member(f"join-{user[1:4]}", user, "join")
    return room


def test_identical_states_resolve_to_themselves() -> None:
    room = joined("10", BOB)
    assert resolve(room, room.main, room.main.fork()) == room.main.state
    assert resolve(room, room.main) == room.main.state
    assert resolve_state_in_memory(room.version, [], room.events) == {}


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_ban_races_with_demotion(version: str) -> None:
    """Bob (50) bans Carol while Alice demotes Bob: the demotion wins, the ban fails."""
    room = joined(version, BOB, CAROL, admins={BOB: 50})
    a, b = room.main.fork(), room.main.fork()
    users = {} if room.version.privileged_creators else {ALICE: 100}
    demote = a.power_levels("demote", ALICE, users)
    b.member("ban", BOB, "ban", CAROL)
    result = resolve(room, a, b)
    assert result[POWER_LEVELS_KEY] == demote.event_id
    assert result[(MEMBER, CAROL)] == room.main.state[(MEMBER, CAROL)]


def test_concurrent_joins_and_leaves_merge() -> None:
    room = joined("10", BOB)
    a, b = room.main.fork(), room.main.fork()
    carol = a.member("cj", CAROL, "join")
    dave = b.member("dj", DAVE, "join")
    bob_leaves = b.member("bl", BOB, "leave")
    result = resolve(room, a, b)
    assert result[(MEMBER, CAROL)] == carol.event_id
    assert result[(MEMBER, DAVE)] == dave.event_id
    assert result[(MEMBER, BOB)] == bob_leaves.event_id


@pytest.mark.parametrize("later", ["leave", "rejoin"])
def test_same_mainline_later_timestamp_wins(later: str) -> None:
    room = joined("10", BOB)
    a, b = room.main.fork(), room.main.fork()
    first, second = (a, b) if later == "rejoin" else (b, a)
    first.member("bob-1", BOB, "leave" if later == "rejoin" else "join", displayname="x")
    winner = second.member("bob-2", BOB, "join" if later == "rejoin" else "leave")
    assert resolve(room, a, b)[(MEMBER, BOB)] == winner.event_id


def test_power_level_fork_is_ordered_by_mainline() -> None:
    """A topic sent under the newer power levels wins over one with a later timestamp
    sent under the older power levels."""
    room = joined("10", BOB, admins={BOB: 50})
    a, b = room.main.fork(), room.main.fork()
    a.power_levels("pl2", ALICE, {ALICE: 100, BOB: 60})
    topic_a = a.send("$ta", "m.room.topic", BOB, {"topic": "a"}, "", ts=5000)
    b.send("$tb", "m.room.topic", BOB, {"topic": "b"}, "", ts=9000)
    result = resolve(room, a, b)
    assert result[POWER_LEVELS_KEY] == "$pl2"
    assert result[TOPIC] == topic_a.event_id


def test_conflicted_join_rule_keeps_out_a_late_joiner() -> None:
    room = joined("10", BOB)
    a, b = room.main.fork(), room.main.fork()
    a.join_rules("invite-only", ALICE, "invite")
    b.member("eve-join", EVE, "join")
    result = resolve(room, a, b)
    assert result[JOIN_RULES_KEY] == "$invite-only"
    assert (MEMBER, EVE) not in result


def test_v1_keeps_keys_only_one_side_has() -> None:
    """v1 only resolves keys whose ids differ; v2 re-checks keys missing on a side."""
    room = joined("1", BOB)
    a, b = room.main.fork(), room.main.fork()
    a.join_rules("invite-only", ALICE, "invite")
    eve = b.member("eve-join", EVE, "join")
    result = resolve(room, a, b)
    assert result[JOIN_RULES_KEY] == "$invite-only:a.test"
    assert result[(MEMBER, EVE)] == eve.event_id


@pytest.mark.parametrize(("version", "winner"), [("1", "$ta:a.test"), ("2", "$tb:a.test")])
def test_v1_prefers_depth_v2_prefers_timestamp(version: str, winner: str) -> None:
    room = joined(version, BOB)
    a, b = room.main.fork(), room.main.fork()
    for i in range(3):
        a.send(room.ev(f"msg{i}"), "m.room.message", BOB, {"body": "x"})
    a.send(room.ev("ta"), "m.room.topic", ALICE, {"topic": "deep"}, "", ts=5000)
    b.send(room.ev("tb"), "m.room.topic", ALICE, {"topic": "late"}, "", ts=9000)
    assert resolve(room, a, b)[TOPIC] == winner


def test_v1_power_levels_apply_in_depth_order_while_allowed() -> None:
    """v1 applies conflicting power levels from the shallowest while each is allowed."""
    room = joined("1", BOB, admins={BOB: 50})
    a, b = room.main.fork(), room.main.fork()
    a.power_levels("promote", ALICE, {ALICE: 100, BOB: 100})
    b.send(room.ev("msg"), "m.room.message", BOB, {})
    b.power_levels("bob-pl", BOB, {ALICE: 100, BOB: 50, CAROL: 50})
    # promote (depth 6) is applied first; then Bob's (depth 7) is allowed on top of it.
    assert resolve(room, a, b)[POWER_LEVELS_KEY] == "$bob-pl:a.test"


def _reset_scenario(version: str) -> tuple[Room, Branch, Branch]:
    """Power levels P1 -> P2 -> P3, with a state set that has P1 but also a name only P2
    allows: the shape of a state reset. Only the conflicted subgraph (v2.1) brings P2
    back into the resolution, without which Bob's P3 looks unauthorised."""
    room = Room(version)
    main = room.main
    main.member("aj", ALICE, "join")
    alice = {} if room.version.privileged_creators else {ALICE: 100}
    levels = {"m.room.power_levels": 100, "m.room.name": 100}
    main.power_levels("p1", ALICE, {**alice, BOB: 50}, events=levels)
    main.join_rules("jr", ALICE, "public")
    main.member("bj", BOB, "join")
    reset = main.fork()
    main.power_levels("p2", ALICE, {**alice, BOB: 100}, events=levels)
    name = main.send("$name", "m.room.name", BOB, {"name": "n"}, "")
    main.power_levels("p3", BOB, {**alice, BOB: 100, CAROL: 50}, events=levels)
    reset.state[NAME] = name.event_id
    return room, reset, main


@pytest.mark.parametrize(("version", "winner"), [("11", "$p1"), ("12", "$p3")])
def test_v2_1_conflicted_subgraph_replays_intermediate_power_levels(
    version: str, winner: str
) -> None:
    room, reset, main = _reset_scenario(version)
    result = resolve(room, reset, main)
    assert result[POWER_LEVELS_KEY] == winner
    assert result[NAME] == "$name"


@pytest.mark.parametrize(("version", "resolved"), [("10", True), ("12", False)])
def test_rejected_auth_events_are_not_used(version: str, resolved: bool) -> None:
    """In v2.1 the power events are replayed from nothing, so a power levels event
    whose sender's join was rejected has nothing to stand on."""
    room = joined(version, BOB)
    a, b = room.main.fork(), room.main.fork()
    alice = {} if room.version.privileged_creators else {ALICE: 100}
    a.power_levels("pa", ALICE, {**alice, BOB: 10})
    b.power_levels("pb", ALICE, {**alice, BOB: 20})
    result = resolve(room, a, b, rejected={"$alice-join"})
    assert (POWER_LEVELS_KEY in result) is resolved


async def test_async_api_with_a_chain_difference_callback() -> None:
    room = joined("10", BOB, CAROL, admins={BOB: 50})
    a, b = room.main.fork(), room.main.fork()
    a.power_levels("demote", ALICE, {ALICE: 100})
    b.member("ban", BOB, "ban", CAROL)
    calls: list[int] = []

    async def fetch(ids: Collection[str]) -> Mapping[str, Event]:
        calls.append(len(ids))
        return {eid: room.events[eid] for eid in ids if eid in room.events}

    walked = await resolve_state(room.version, [a.state, b.state], fetch)
    indexed = await resolve_state(
        room.version,
        [a.state, b.state],
        fetch,
        auth_chain_difference=_naive_difference(room.events),
    )
    assert walked == indexed == resolve(room, a, b)
    assert calls


def test_unknown_events_are_left_out() -> None:
    room = joined("10", BOB)
    a, b = room.main.fork(), room.main.fork()
    a.send("$ta", "m.room.topic", ALICE, {}, "")
    b.send("$tb", "m.room.topic", ALICE, {}, "")
    known = {eid: ev for eid, ev in room.events.items() if eid != "$tb"}
    result = resolve_state_in_memory(room.version, [a.state, b.state], known)
    assert result[TOPIC] == "$ta"


def _naive_difference(events: Mapping[str, Event]):  # type: ignore[no-untyped-def]
    """The auth difference straight from its definition, for checking the walk."""

    async def difference(sets: Sequence[AbstractSet[str]]) -> AbstractSet[str]:
        chains = []
        for state_ids in sets:
            seen = set(state_ids)
            stack = list(state_ids)
            while stack:
                for auth_id in events[stack.pop()].auth_event_ids:
                    if auth_id not in seen:
                        seen.add(auth_id)
                        stack.append(auth_id)
            chains.append(seen)
        return set().union(*chains) - set.intersection(*chains)

    return difference


# -- determinism ---------------------------------------------------------------------------

USERS = [ALICE, BOB, CAROL, DAVE]
_op = st.one_of(
    st.tuples(
        st.just("member"),
        st.sampled_from(USERS),
        st.sampled_from(USERS),
        st.sampled_from(["join", "leave", "ban", "invite"]),
    ),
    st.tuples(st.just("pl"), st.sampled_from(USERS), st.sampled_from([0, 50, 100])),
    st.tuples(st.just("topic"), st.sampled_from(USERS)),
    st.tuples(st.just("rules"), st.sampled_from(["public", "invite"])),
)
_forks = st.lists(st.lists(st.tuples(_op, st.integers(0, 3)), max_size=5), min_size=2, max_size=3)


def _build_forks(version: str, forks: list[list[tuple[tuple, int]]]) -> tuple[Room, list[Branch]]:
    room = joined(version, BOB, CAROL, admins={BOB: 50})
    alice = {} if room.version.privileged_creators else {ALICE: 100}
    branches = []
    for f, ops in enumerate(forks):
        branch = room.main.fork()
        for i, (op, ts) in enumerate(ops):
            eid = room.ev(f"f{f}-{i}")
            if op[0] == "member":
                _, sender, target, membership = op
                branch.send(eid, MEMBER, sender, {"membership": membership}, target, ts=ts)
            elif op[0] == "pl":
                _, sender, level = op
                content = {"users": {**alice, BOB: 50, DAVE: level}}
                branch.send(eid, "m.room.power_levels", sender, content, "", ts=ts)
            elif op[0] == "topic":
                branch.send(eid, "m.room.topic", op[1], {"topic": eid}, "", ts=ts)
            else:
                branch.send(eid, "m.room.join_rules", ALICE, {"join_rule": op[1]}, "", ts=ts)
        branches.append(branch)
    return room, branches


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    forks=_forks,
    order=st.randoms(use_true_random=False),
    version=st.sampled_from(["1", "10", "12"]),
)
def test_result_does_not_depend_on_input_order(forks, order, version) -> None:  # type: ignore[no-untyped-def]
    room, branches = _build_forks(version, forks)
    states = [b.state for b in branches]
    expected = resolve_state_in_memory(room.version, states, room.events)
    shuffled = []
    for state in states:
        items = list(state.items())
        order.shuffle(items)
        shuffled.append(dict(items))
    order.shuffle(shuffled)
    assert resolve_state_in_memory(room.version, shuffled, room.events) == expected
    if version != "1":
        indexed = asyncio.run(
            resolve_state(
                room.version,
                shuffled,
                _fetcher(room.events),
                auth_chain_difference=_naive_difference(room.events),
            )
        )
        assert indexed == expected


def _fetcher(events: Mapping[str, Event]):  # type: ignore[no-untyped-def]
    async def fetch(ids: Collection[str]) -> Mapping[str, Event]:
        return {eid: events[eid] for eid in ids if eid in events}

    return fetch
