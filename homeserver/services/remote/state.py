"""Placing events from other servers in our copy of a room.

The state before a remote event is the state after its prev events, resolved when
they differ. The event is then stored accepted (a stream position, a forward
extremity, maybe a new current state), rejected (never shown, never state) or
soft-failed (kept for the DAG, not shown, not a forward extremity). Current state
follows the forward extremities: when the new event follows every one of them it is
the state after the event, otherwise the resolution of the states at all of them.
Everything runs inside a `RoomWriter`'s locked transaction, so it commits with the
event and wakes syncs the usual way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from federation.auth_rules import auth_types_for_event
from federation.events import CREATE_KEY, MEMBER, POWER_LEVELS_KEY, Event
from federation.identifiers import domain_of
from federation.power_levels import named_level, user_level
from federation.room_versions import RoomVersion
from federation.stateres import EventFetcher, resolve_state
from homeserver.services.rooms.event_cache import EventCache, load_events, state_entries
from homeserver.services.rooms.writer import PersistedEvent, RoomWriter, event_record
from homeserver.storage.core.pool import Connection
from homeserver.storage.remote import backfill as backfill_store
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import rooms, state
from homeserver.storage.rooms.state import StateKey, StateMap

StateSet = int | Mapping[StateKey, str]
"""A state: a stored state group's id, or a map held in memory."""


def fetcher(conn: Connection, cache: EventCache) -> EventFetcher:
    async def fetch(event_ids: Collection[str]) -> Mapping[str, Event]:
        return await load_events(conn, cache, event_ids)

    return fetch


@dataclass(frozen=True, slots=True)
class StateBefore:
    """The state before an event: a stored group when it equals one (the common,
    linear case: no copy of the room's state is made), else a resolved map."""

    group: int | None
    full: StateMap | None

    async def get(self, conn: Connection, keys: Iterable[StateKey]) -> StateMap:
        if self.group is not None:
            return await state.get_state(conn, self.group, keys)
        assert self.full is not None
        return {k: self.full[k] for k in keys if k in self.full}

    async def whole(self, conn: Connection) -> StateMap:
        if self.group is not None:
            return await state.get_state(conn, self.group)
        assert self.full is not None
        return dict(self.full)


async def resolve_sets(
    conn: Connection, cache: EventCache, room_version: RoomVersion, sets: list[StateSet]
) -> StateBefore:
    groups = {s for s in sets if isinstance(s, int)}
    maps = [s for s in sets if not isinstance(s, int)]
    if not maps and len(groups) == 1:
        return StateBefore(next(iter(groups)), None)
    if not groups and len(maps) == 1:
        return StateBefore(None, dict(maps[0]))
    full = [await state.get_state(conn, g) for g in sorted(groups)] + maps
    resolved = await resolve_state(room_version, full, fetcher(conn, cache))
    return StateBefore(None, resolved)


async def auth_state_from(
    conn: Connection, cache: EventCache, event: Event, before: StateBefore
) -> dict[StateKey, Event]:
    """The events of `before` that the auth rules read for `event` (a group's entries
    through the cache: a run of messages reads the same ones)."""
    keys = auth_types_for_event(event) | {CREATE_KEY}
    if before.group is not None:
        ids = (await state_entries(conn, cache, [before.group], keys))[before.group]
    else:
        ids = await before.get(conn, keys)
    found = await load_events(conn, cache, ids.values())
    return {key: found[eid] for key, eid in ids.items() if eid in found}


async def persist_outliers(
    conn: Connection, cache: EventCache, events: Iterable[Event], rejected: Mapping[str, str]
) -> None:
    """Store events we hold without their place in the timeline (auth chains, state
    fetched for a gap); ones we already have are left alone."""
    batch = {e.event_id: e for e in events}
    known = await fed_store.known_event_ids(conn, batch)
    for event_id, event in batch.items():
        if event_id in known:
            continue
        await event_store.insert_event(
            conn,
            event_record(event),
            stream_ordering=None,
            state_group=None,
            rejected_reason=rejected.get(event_id),
        )
        cache.put(event)


async def group_after(
    conn: Connection, event: Event, before: StateBefore, *, accepted: bool = True
) -> int:
    """The state group after `event` (a rejected event changes no state): `before`'s
    own group when nothing changes, a delta on it, or a new snapshot of a resolved map."""
    key = event.state_tuple if event.is_state and accepted else None
    if before.group is not None:
        if key is None:
            return before.group
        new_key = not await state.get_state(conn, before.group, [key])
        delta = {key: event.event_id}
        return await state.create_group(conn, event.room_id, before.group, delta, int(new_key))
    full = dict(before.full or {})
    if key is not None:
        full[key] = event.event_id
    return await state.create_group(conn, event.room_id, None, full, 0)


async def persist_remote(
    writer: RoomWriter,
    event: Event,
    before: StateBefore,
    *,
    rejected_reason: str | None = None,
    soft_failed: bool = False,
) -> int:
    """Store a remote event with the state before it; the state group after it.
    Accepted, it joins the timeline (`writer.persisted`)."""
    conn, room_id = writer.conn, writer.room_id
    group = await group_after(conn, event, before, accepted=rejected_reason is None)
    writer.groups_of[event.event_id] = group
    if rejected_reason is not None or soft_failed:
        await event_store.insert_event(
            conn,
            event_record(event),
            stream_ordering=None,
            state_group=group,
            rejected_reason=rejected_reason,
            soft_failed=soft_failed,
        )
        await backfill_store.note_placed(conn, room_id, event.event_id, (), in_timeline=False)
        return group
    position = await writer.next_position()
    await event_store.insert_event(
        conn, event_record(event), stream_ordering=position, state_group=group
    )
    await backfill_store.note_placed(
        conn, room_id, event.event_id, event.prev_event_ids, in_timeline=True
    )
    old_tips = {eid for eid, _ in writer.extremities}
    prevs = set(event.prev_event_ids)
    await rooms.replace_forward_extremities(conn, room_id, prevs, event.event_id)
    writer.extremities = [(event.event_id, event.depth)] + [
        (eid, d) for eid, d in writer.extremities if eid not in prevs
    ]
    if old_tips <= prevs:
        if before.group is not None and before.group == writer.state_group:
            changed = {event.state_tuple: event.event_id} if event.is_state else {}
            await write_current_state(writer, changed, (), group)
        else:
            await replace_current_state(writer, await state.get_state(conn, group), group)
    else:
        await _resolve_current_state(writer, old_tips & prevs)
    writer.cache.put(event)
    if event.type == "m.room.redaction":
        await apply_redaction(conn, writer.cache, event, group)
    writer.persisted.append(PersistedEvent(event, position))
    return group


async def apply_redaction(
    conn: Connection, cache: EventCache, redaction: Event, group: int
) -> None:
    """Redact the target of an accepted remote redaction, as a local one would: the auth
    rules let any member send one, so it only takes effect when its sender's server sent
    the target too, or the sender has the power to redact in `group`, the state at the
    redaction (spec: room versions 3+, "Handling redactions"). A target we do not hold
    yet stays as it is (backfill applies the redaction when it places the target)."""
    target_id = redaction.redacts
    if target_id is None:
        return
    ids = await state.get_state(conn, group, [CREATE_KEY, POWER_LEVELS_KEY])
    found = await load_events(conn, cache, [*ids.values(), target_id])
    target = found.get(target_id)
    if target is None or target.room_id != redaction.room_id:
        return
    if domain_of(target.sender) != domain_of(redaction.sender):
        create = found.get(ids.get(CREATE_KEY, ""))
        power = found.get(ids.get(POWER_LEVELS_KEY, ""))
        if user_level(redaction.sender, create, power) < named_level(power, "redact"):
            return
    await event_store.mark_redacted(conn, target_id, redaction.event_id)


async def _resolve_current_state(writer: RoomWriter, replaced: set[str]) -> None:
    """The forward extremities fork: current state is the resolution of their states.
    When the new tip brings no state group the old tips lacked (a message on one
    branch, the common case), the states resolved are the same and so is the result."""
    conn = writer.conn
    new_tip, *others = [eid for eid, _ in writer.extremities]
    groups = writer.groups_of
    unknown = [e for e in [new_tip, *others, *replaced] if e not in groups]
    for eid, row in (await event_store.get_events(conn, unknown)).items():
        if row.state_group is not None:
            groups[eid] = row.state_group
    before = {groups[e] for e in [*others, *replaced] if e in groups}
    if {groups[e] for e in [new_tip, *others] if e in groups} == before:
        return
    sets: list[StateSet] = [groups[e] for e in [new_tip, *others] if e in groups]
    resolved = await resolve_sets(conn, writer.cache, writer.room_version, sets)
    if resolved.group is not None:
        await replace_current_state(
            writer, await state.get_state(conn, resolved.group), resolved.group
        )
        return
    assert resolved.full is not None
    group = await state.create_group(conn, writer.room_id, None, resolved.full, 0)
    await replace_current_state(writer, resolved.full, group)


async def replace_current_state(writer: RoomWriter, new: StateMap, group: int) -> None:
    old = await state.get_current_state(writer.conn, writer.room_id)
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    await write_current_state(writer, changed, [k for k in old if k not in new], group)


async def write_current_state(
    writer: RoomWriter, changed: StateMap, removed: Iterable[StateKey], group: int
) -> None:
    conn, room_id = writer.conn, writer.room_id
    removed = list(removed)
    await state.set_current_state(conn, room_id, changed)
    await fed_store.delete_current_state(conn, room_id, removed)
    await rooms.set_current_state_group(conn, room_id, group)
    writer.state_group = group
    writer.changed_state.update(changed)
    writer.changed_state.update(removed)
    member_ids = [eid for (event_type, _), eid in changed.items() if event_type == MEMBER]
    members = await load_events(conn, writer.cache, member_ids)
    # A membership that became current through resolution, or with state learnt on
    # joining, has no timeline position of its own: the room's latest one stands in.
    position = writer.latest_position
    for event in members.values():
        await writer.set_membership(event, position)
