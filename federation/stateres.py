"""State resolution: v1 (room v1), v2 (rooms 2 to 11) and v2.1 (room v12).

When the prev events of an event carry different room states, the state before it is
the resolution of those states. This module computes it from state maps
((type, state_key) -> event id) and a way to fetch events; it is async so that the
server can fetch from its database, but it does no I/O of its own, and its result
depends only on the inputs, never on their order.

Rejected events: pass the ids of events rejected on receipt in `rejected`; they are
never used as auth events, as the spec asks, but still take part in resolution.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Awaitable, Callable, Collection, Container, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from federation.auth_rules import AuthError, auth_types_for_event, check_auth
from federation.events import (
    CREATE,
    CREATE_KEY,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    POWER_LEVELS_KEY,
    Event,
    StateKey,
)
from federation.identifiers import create_event_id_for_room
from federation.power_levels import user_level
from federation.room_versions import RoomVersion, StateResAlgorithm

StateMap = Mapping[StateKey, str]
EventFetcher = Callable[[Collection[str]], Awaitable[Mapping[str, Event]]]
"""Fetches events by id; ids it cannot find are simply left out of its answer."""
AuthChainDifference = Callable[[Sequence[AbstractSet[str]]], Awaitable[AbstractSet[str]]]
"""Given the event ids of each state set, the events in some but not all of their auth
chains (each set's auth chain including its own events), e.g. from a chain index."""


async def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch_events: EventFetcher,
    *,
    rejected: Container[str] = frozenset(),
    auth_chain_difference: AuthChainDifference | None = None,
) -> dict[StateKey, str]:
    """Resolve `state_sets` with the algorithm of `room_version`.

    Without `auth_chain_difference` the auth chains are walked through `fetch_events`.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    resolver = _Resolver(room_version, fetch_events, rejected)
    if room_version.state_res is StateResAlgorithm.V1:
        return await resolver.resolve_v1(state_sets)
    return await resolver.resolve_v2(state_sets, auth_chain_difference)


def resolve_state_in_memory(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    events: Mapping[str, Event],
    *,
    rejected: Container[str] = frozenset(),
) -> dict[StateKey, str]:
    """`resolve_state` over events already in memory, without an event loop."""

    async def fetch(event_ids: Collection[str]) -> Mapping[str, Event]:
        return {eid: events[eid] for eid in event_ids if eid in events}

    coroutine = resolve_state(room_version, state_sets, fetch, rejected=rejected)
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: dict[StateKey, str] = done.value
        return result
    coroutine.close()
    raise RuntimeError("in-memory state resolution unexpectedly suspended")


def is_power_event(event: Event) -> bool:
    """Events that can take a power away from someone: power levels, join rules, the
    create event, and kicks and bans (a leave or ban sent by someone else)."""
    if event.state_key == "" and event.type in (POWER_LEVELS, JOIN_RULES, CREATE):
        return True
    return (
        event.type == MEMBER
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def _separate(
    state_sets: Sequence[StateMap], *, missing_is_conflict: bool
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the unconflicted state map and the conflicted ids per key.

    From v2 a key missing from some set is conflicted; in v1 only differing ids are.
    """
    first = state_sets[0]
    differing: set[StateKey] = set()
    for other in state_sets[1:]:
        if other is first:
            continue
        for key, event_id in other.items():
            if first.get(key) != event_id:
                differing.add(key)
        differing.update(first.keys() - other.keys())
    unconflicted = dict(first)
    conflicted: dict[StateKey, set[str]] = {}
    for key in differing:
        unconflicted.pop(key, None)
        ids = {state_set[key] for state_set in state_sets if key in state_set}
        if len(ids) == 1 and not missing_is_conflict:
            unconflicted[key] = ids.pop()
        else:
            conflicted[key] = ids
    return unconflicted, conflicted


class _Resolver:
    """One resolution: the events fetched so far and the room version's rules."""

    def __init__(
        self, room_version: RoomVersion, fetch: EventFetcher, rejected: Container[str]
    ) -> None:
        self.room_version = room_version
        self.events: dict[str, Event] = {}
        self._fetch = fetch
        self._unknown: set[str] = set()
        self._rejected = rejected
        self._implied_create = room_version.room_id_from_create_event

    async def load(self, event_ids: Iterable[str]) -> None:
        """Fetch the events of `event_ids` not fetched (or found unknown) yet."""
        events, unknown = self.events, self._unknown
        wanted = {eid for eid in event_ids if eid not in events and eid not in unknown}
        if not wanted:
            return
        found = await self._fetch(wanted)
        for eid in wanted:
            event = found.get(eid)
            if event is None:
                unknown.add(eid)
            else:
                events[eid] = event

    def auth_ids(self, event: Event) -> tuple[str, ...]:
        """The event's auth events; in v12 the create event, implied by the room id,
        counts as one (as it does for the other servers' state resolution)."""
        ids = event.auth_event_ids
        if self._implied_create:
            # Only the create event itself has no room id to imply it by.
            room_id = event.pdu.get("room_id")
            if type(room_id) is str:
                create_id = create_event_id_for_room(room_id)
                if create_id is not None and create_id not in ids:
                    return (*ids, create_id)
        return ids

    def auth_event_of_type(self, event: Event, key: StateKey) -> Event | None:
        for auth_id in self.auth_ids(event):
            auth_event = self.events.get(auth_id)
            if auth_event is not None and auth_event.type == key[0]:
                if auth_event.state_key == key[1]:
                    return auth_event
        return None

    async def walk(
        self,
        starts: Iterable[str],
        stop: Container[str] = frozenset(),
        targets: AbstractSet[str] | None = None,
    ) -> set[str]:
        """`starts` and their auth ancestors, not walking past events in `stop`; when
        `targets` is given, stop as soon as all of them have been seen."""
        seen = set(starts)
        frontier = list(seen)
        while frontier and not (targets is not None and targets <= seen):
            await self.load(frontier)
            found: list[str] = []
            events = self.events
            for eid in frontier:
                event = events.get(eid)
                if event is None or eid in stop:
                    continue
                for auth_id in self.auth_ids(event):
                    if auth_id not in seen:
                        seen.add(auth_id)
                        found.append(auth_id)
            frontier = found
        return seen

    # -- v2 and v2.1 ------------------------------------------------------------------

    async def resolve_v2(
        self, state_sets: Sequence[StateMap], auth_chain_difference: AuthChainDifference | None
    ) -> dict[StateKey, str]:
        v2_1 = self.room_version.state_res is StateResAlgorithm.V2_1
        unconflicted, conflicted = _separate(state_sets, missing_is_conflict=True)
        if not conflicted:
            return unconflicted
        conflicted_ids = set().union(*conflicted.values())

        chains: list[set[str]] = []
        if auth_chain_difference is None or v2_1:
            # Each set's conflicted events with their auth chains: the part of the
            # set's full auth chain that can differ from the others'.
            for state_set in state_sets:
                own = [state_set[key] for key in conflicted if key in state_set]
                chains.append(await self.walk(own))
        if auth_chain_difference is not None:
            full = set(await auth_chain_difference([set(s.values()) for s in state_sets]))
        else:
            full = await self._auth_difference(chains, set(unconflicted.values()))
        full |= conflicted_ids
        if v2_1:
            full |= self._conflicted_subgraph(conflicted_ids, set().union(*chains))
        await self.load(full)
        full = {eid for eid in full if eid in self.events}

        power = await self._reverse_topological_power_order(
            [eid for eid in full if is_power_event(self.events[eid])], full
        )
        # v2.1 replays the power events from nothing, so that an unconflicted but
        # unauthorised event cannot lend them power it should not have.
        state = await self._iterative_auth_checks(power, {} if v2_1 else dict(unconflicted))
        power_set = set(power)
        others = await self._mainline_order(
            [eid for eid in full if eid not in power_set], state.get(POWER_LEVELS_KEY)
        )
        state = await self._iterative_auth_checks(others, state)
        state.update(unconflicted)
        return state

    async def _auth_difference(self, chains: list[set[str]], unconflicted: set[str]) -> set[str]:
        """Events in some but not all of the state sets' full auth chains.

        Every full chain is (unconflicted events and their chains) + (that set's part
        in `chains`), so the difference is what differs between the parts, less what
        the unconflicted events reach. That walk need not pass events every part has:
        their ancestors are in every part too.
        """
        in_all = set.intersection(*chains)
        candidates = set().union(*chains) - in_all
        if not candidates:
            return candidates
        reached = await self.walk(unconflicted, stop=in_all, targets=candidates)
        return candidates - reached

    def _conflicted_subgraph(self, conflicted: set[str], ancestors: set[str]) -> set[str]:
        """Events on an auth path from one conflicted event to another (v2.1).

        `ancestors` is the conflicted events and their auth chains (all fetched); of
        those, keep the ones that are conflicted or descend from a conflicted event.
        """
        children: dict[str, list[str]] = {}
        for eid in ancestors:
            event = self.events.get(eid)
            if event is None:
                continue
            for auth_id in self.auth_ids(event):
                if auth_id in ancestors:
                    children.setdefault(auth_id, []).append(eid)
        reached = set(conflicted)
        stack = list(conflicted)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in reached:
                    reached.add(child)
                    stack.append(child)
        return reached

    async def _reverse_topological_power_order(
        self, power_ids: list[str], full: set[str]
    ) -> list[str]:
        """The power events and their auth ancestors in the full conflicted set, oldest
        first; ties go to the more powerful sender, then the older, then the lower id."""
        graph: dict[str, list[str]] = {}
        stack = list(power_ids)
        while stack:
            eid = stack.pop()
            if eid in graph:
                continue
            edges = graph[eid] = []
            for auth_id in self.auth_ids(self.events[eid]):
                if auth_id in full:
                    edges.append(auth_id)
                    if auth_id not in graph:
                        stack.append(auth_id)
        await self.load(aid for eid in graph for aid in self.auth_ids(self.events[eid]))

        keys: dict[str, tuple[float, int, str]] = {}
        for eid in graph:
            event = self.events[eid]
            power = user_level(
                event.sender,
                self.auth_event_of_type(event, CREATE_KEY),
                self.auth_event_of_type(event, POWER_LEVELS_KEY),
            )
            keys[eid] = (-power, event.origin_server_ts, eid)

        waiting = {eid: len(set(edges)) for eid, edges in graph.items()}
        dependants: dict[str, list[str]] = {eid: [] for eid in graph}
        for eid, edges in graph.items():
            for auth_id in set(edges):
                dependants[auth_id].append(eid)
        heap = [keys[eid] for eid, count in waiting.items() if count == 0]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            eid = heapq.heappop(heap)[2]
            order.append(eid)
            for dependant in dependants[eid]:
                waiting[dependant] -= 1
                if waiting[dependant] == 0:
                    heapq.heappush(heap, keys[dependant])
        return order

    async def _mainline_order(self, event_ids: list[str], power_levels_id: str | None) -> list[str]:
        """Order events by where their power levels chain meets the mainline of the
        resolved power levels event (older first), then by timestamp and id."""
        if not event_ids:
            return []
        mainline: list[str] = []
        current = power_levels_id
        while current is not None and current not in mainline:
            await self.load((current,))
            event = self.events.get(current)
            if event is None:
                break
            mainline.append(current)
            await self.load(self.auth_ids(event))
            parent = self.auth_event_of_type(event, POWER_LEVELS_KEY)
            current = None if parent is None else parent.event_id
        # Position counted from the oldest (1); 0 when the chain never meets the mainline.
        positions = {eid: len(mainline) - i for i, eid in enumerate(mainline)}

        keys: dict[str, tuple[int, int, str]] = {}
        for eid in event_ids:
            event = self.events[eid]
            keys[eid] = (
                await self._mainline_position(event, positions),
                event.origin_server_ts,
                eid,
            )
        return sorted(event_ids, key=keys.__getitem__)

    async def _mainline_position(self, event: Event, positions: dict[str, int]) -> int:
        """Follow power levels auth events from `event` until one is on the mainline.

        Positions found on the way are remembered in `positions`, as later events
        mostly share the same chain.
        """
        path: list[str] = []
        current: Event | None = event
        position = 0
        while current is not None:
            await self.load(self.auth_ids(current))
            current = self.auth_event_of_type(current, POWER_LEVELS_KEY)
            if current is None or current.event_id in path:
                break
            known = positions.get(current.event_id)
            if known is not None:
                position = known
                break
            path.append(current.event_id)
        for eid in path:
            positions[eid] = position
        return position

    async def _iterative_auth_checks(
        self, event_ids: list[str], state: dict[StateKey, str]
    ) -> dict[StateKey, str]:
        """Apply each event in turn to `state` if it passes the auth rules against it.

        Keys the rules need but `state` lacks come from the event's own (accepted) auth
        events. `state` is updated in place and returned.
        """
        types: dict[str, set[StateKey]] = {}
        wanted: list[str] = []
        for eid in event_ids:
            event = self.events[eid]
            types[eid] = needed = auth_types_for_event(event)
            wanted.extend(self.auth_ids(event))
            wanted.extend(state[key] for key in needed if key in state)
        await self.load(wanted)

        events, rejected = self.events, self._rejected
        for eid in event_ids:
            event = events[eid]
            auth_state: dict[StateKey, Event] = {}
            for auth_id in self.auth_ids(event):
                auth_event = events.get(auth_id)
                if auth_event is not None and auth_event.is_state and auth_id not in rejected:
                    auth_state[auth_event.state_tuple] = auth_event
            for key in types[eid]:
                current = state.get(key)
                if current is not None and current in events:
                    auth_state[key] = events[current]
            try:
                check_auth(event, auth_state)
            except AuthError:
                continue
            state[event.state_tuple] = eid
        return state

    # -- v1 ---------------------------------------------------------------------------

    async def resolve_v1(self, state_sets: Sequence[StateMap]) -> dict[StateKey, str]:
        """Room v1: power levels, then join rules, then members are each resolved
        against the state settled before them; then everything else."""
        unconflicted, conflicted = _separate(state_sets, missing_is_conflict=False)
        if not conflicted:
            return unconflicted
        await self.load(eid for ids in conflicted.values() for eid in ids)
        candidates = {
            key: [self.events[eid] for eid in ids if eid in self.events]
            for key, ids in conflicted.items()
        }
        needed = {
            key
            for events in candidates.values()
            for event in events
            for key in auth_types_for_event(event)
            if key in unconflicted
        }
        await self.load(unconflicted[key] for key in needed)
        auth_state = {
            key: self.events[unconflicted[key]]
            for key in needed
            if unconflicted[key] in self.events
        }

        resolved: dict[StateKey, Event] = {}
        stages: list[Callable[[StateKey], bool]] = [
            lambda key: key == POWER_LEVELS_KEY,
            lambda key: key[0] == JOIN_RULES,
            lambda key: key[0] == MEMBER,
        ]
        for in_stage in stages:
            stage = {
                key: _v1_first_unauthorised(events, auth_state)
                for key, events in candidates.items()
                if events and in_stage(key) and key not in resolved
            }
            resolved.update(stage)
            auth_state.update(stage)
        for key, events in candidates.items():
            if events and key not in resolved:
                resolved[key] = _v1_first_authorised(events, auth_state)

        result = dict(unconflicted)
        result.update((key, event.event_id) for key, event in resolved.items())
        return result


def _v1_order(event: Event) -> tuple[int, str]:
    """Highest depth first, then lowest sha1 of the id (the v1 preference)."""
    return (-event.depth, hashlib.sha1(event.event_id.encode("utf-8")).hexdigest())


def _v1_first_unauthorised(events: list[Event], auth_state: Mapping[StateKey, Event]) -> Event:
    """v1 for auth-affecting keys: from the least preferred event up, apply each while
    the next is allowed on top of it; the last applied wins."""
    ordered = sorted(events, key=_v1_order, reverse=True)
    state = dict(auth_state)
    winner = ordered[0]
    for event in ordered[1:]:
        state[winner.state_tuple] = winner
        try:
            check_auth(event, state)
        except AuthError:
            break
        winner = event
    return winner


def _v1_first_authorised(events: list[Event], auth_state: Mapping[StateKey, Event]) -> Event:
    """v1 for other keys: the most preferred event that is allowed (or the most
    preferred when none is)."""
    ordered = sorted(events, key=_v1_order)
    for event in ordered:
        try:
            check_auth(event, auth_state)
        except AuthError:
            continue
        return event
    return ordered[0]
