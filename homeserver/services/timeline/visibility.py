"""History visibility: which events a user may see, and how much of a room they may
read at all. Every path that hands events to a client (or to another server) goes
through `filter_visible`.

The spec's rules, judged with the state at each event (for us: the state group
stored with the event, which includes the event's own change):

1. `world_readable` at the event: allow.
2. The user's membership at the event was `join`: allow.
3. `shared`, and the user joined the room at any point after the event: allow.
4. `invited`, and the user's membership at the event was `invite`: allow.
5. Otherwise deny.

A history visibility event, and a user's own membership event, is visible if the
state before or after it allows it (so a user sees their own join and leave).
An unknown visibility value is treated as `joined`, the strictest.

Cost: a page of events costs a constant number of queries: one for the visibility
and membership entries of every state group involved (a single recursive query,
skipped when the process has them cached: state groups never change),
at most one for the states before the few events that need them, one for the
user's latest join when `shared` history is in play, and loading the state events
themselves (usually cached).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from federation.events import Event
from homeserver.services.core.errors import ServiceError
from homeserver.services.rooms.event_cache import EventCache, load_event, load_events, state_entries
from homeserver.storage.accounts import account_data
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import state
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline import timeline
from homeserver.storage.timeline.timeline import Position

HISTORY_VISIBILITY = "m.room.history_visibility"
HISTORY_KEY = (HISTORY_VISIBILITY, "")
MEMBER = "m.room.member"
VISIBILITIES = frozenset({"world_readable", "shared", "invited", "joined"})


def history_visibility_of(event: Event | None) -> str:
    """The visibility an m.room.history_visibility event sets (`shared` when none)."""
    if event is None:
        return "shared"
    value = event.content.get("history_visibility")
    return value if isinstance(value, str) and value in VISIBILITIES else "joined"


def _membership_of(event: Event | None) -> str:
    membership = event.membership if event is not None else None
    return membership or "leave"


def _allowed(
    visibility: str, membership: str, position: Position, latest_join: Position | None
) -> bool:
    if visibility == "world_readable" or membership == "join":
        return True
    if visibility == "shared":
        return latest_join is not None and latest_join > position
    return visibility == "invited" and membership == "invite"


def event_of(cache: EventCache, row: EventRow) -> Event:
    event = cache.get(row.event_id)
    if event is None:
        event = load_event(row)
        cache.put(event)
    return event


async def ignored_senders(
    conn: Connection, user_id: str, events: Iterable[Event]
) -> frozenset[str]:
    """The users `user_id` ignores, if any of `events` could be hidden for it (else no
    query is made)."""
    if any(e.state_key is None and e.sender != user_id for e in events):
        return await account_data.ignored_users(conn, user_id)
    return frozenset()


def is_ignored(event: Event, ignored: frozenset[str]) -> bool:
    """Whether `event` is hidden by the ignore list: every event of an ignored user
    but their state events."""
    return event.state_key is None and event.sender in ignored


@dataclass(slots=True)
class VisibleEvents:
    """The visible rows, in the order given, and the user's membership at each."""

    rows: list[EventRow] = field(default_factory=list)
    memberships: dict[str, str] = field(default_factory=dict)


def _needs_state_before(event: Event, user_id: str) -> bool:
    if event.type == HISTORY_VISIBILITY and event.state_key == "":
        return True
    return event.type == MEMBER and event.state_key == user_id


async def filter_visible(
    conn: Connection,
    cache: EventCache,
    user_id: str,
    rows: Sequence[EventRow],
    *,
    hide_ignored: bool = True,
) -> VisibleEvents:
    """The events of `rows` that `user_id` may see. Rows may come from several rooms.

    With `hide_ignored`, the events that users `user_id` ignores sent are left out but
    for state events, as the spec says of `m.ignored_user_list` (and as Synapse does on
    every read path: sync, /messages, /context, /event, relations, search)."""
    out = VisibleEvents()
    placed = [(row, event_of(cache, row)) for row in rows]
    placed = [
        (r, e) for r, e in placed if r.state_group is not None and r.stream_ordering is not None
    ]
    if hide_ignored and any(e.state_key is None and e.sender != user_id for _, e in placed):
        ignored = await account_data.ignored_users(conn, user_id)
        if ignored:
            placed = [
                (r, e) for r, e in placed if e.state_key is not None or e.sender not in ignored
            ]
    if not placed:
        return out
    member_key = (MEMBER, user_id)

    prev_ids = {
        prev
        for _, event in placed
        if _needs_state_before(event, user_id)
        for prev in event.prev_event_ids
    }
    prev_groups: dict[str, int] = {}
    if prev_ids:
        prev_rows = await event_store.get_events(conn, prev_ids)
        prev_groups = {
            eid: r.state_group for eid, r in prev_rows.items() if r.state_group is not None
        }
    groups = {r.state_group for r, _ in placed if r.state_group is not None}
    groups.update(prev_groups.values())
    states = await state_entries(conn, cache, groups, [HISTORY_KEY, member_key])
    state_ids = {eid for entries in states.values() for eid in entries.values()}
    state_events = await load_events(conn, cache, state_ids)

    def judged(group: int) -> tuple[str, str]:
        entries = states.get(group, {})
        hv = state_events.get(entries.get(HISTORY_KEY, ""))
        member = state_events.get(entries.get(member_key, ""))
        return history_visibility_of(hv), _membership_of(member)

    at_event: dict[str, tuple[str, str]] = {}
    for row, _ in placed:
        assert row.state_group is not None
        at_event[row.event_id] = judged(row.state_group)
    # "Joined at any point after the event" is only asked about `shared` history.
    needs_join = bool(prev_groups) or any(
        visibility == "shared" and membership != "join"
        for visibility, membership in at_event.values()
    )
    latest_join: dict[str, Position] = {}
    if needs_join:
        latest_join = await timeline.latest_joins(conn, user_id, {r.room_id for r, _ in placed})

    for row, event in placed:
        assert row.stream_ordering is not None
        position = Position(event.depth, row.stream_ordering)
        joined = latest_join.get(row.room_id)
        visibility, membership = at_event[row.event_id]
        allowed = _allowed(visibility, membership, position, joined)
        if not allowed and _needs_state_before(event, user_id):
            # Before the event: the state of its prev events (the room start if none).
            befores = [judged(prev_groups[p]) for p in event.prev_event_ids if p in prev_groups]
            befores = befores or [("shared", "leave")]
            allowed = any(_allowed(v, m, position, joined) for v, m in befores)
        if allowed:
            out.rows.append(row)
            out.memberships[row.event_id] = membership
    return out


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """How much of a room a user may read.

    Members read the room as it is now; users who left (or were banned) read it as it
    was when they left, unless it is world-readable, which anyone may read.
    """

    room_id: str
    user_id: str
    membership: str | None
    state_group: int | None
    upper: Position | None

    @property
    def is_member(self) -> bool:
        return self.membership == "join"


def cannot_read() -> ServiceError:
    # Unknown rooms get the same answer, so that probing does not reveal rooms.
    return ServiceError(403, "M_FORBIDDEN", "You are not allowed to read this room")


async def current_history_visibility(conn: Connection, cache: EventCache, room_id: str) -> str:
    ids = await state.get_current_state(conn, room_id, [HISTORY_KEY])
    found = await load_events(conn, cache, ids.values())
    return history_visibility_of(found.get(ids.get(HISTORY_KEY, "")))


async def event_room_access(
    conn: Connection, cache: EventCache, user_id: str, room_id: str
) -> RoomAccess:
    """`room_access` for reading one event (/event, /context, /relations): a room the
    user may not read answers as an event that is not there (the spec's 404), so that
    neither the room nor the event is revealed."""
    try:
        return await room_access(conn, cache, user_id, room_id)
    except ServiceError as exc:
        if exc.status == 403:
            raise ServiceError(404, "M_NOT_FOUND", "Event not found") from None
        raise


async def room_access(
    conn: Connection, cache: EventCache, user_id: str, room_id: str
) -> RoomAccess:
    """What `user_id` may read of `room_id`, or 403 M_FORBIDDEN."""
    found = await timeline.room_and_membership(conn, room_id, user_id)
    if found is None:
        raise cannot_read()
    current_group, member = found
    current = RoomAccess(room_id, user_id, None, current_group, None)
    if member is not None and member.membership == "join":
        return RoomAccess(room_id, user_id, "join", current_group, None)
    if await current_history_visibility(conn, cache, room_id) == "world_readable":
        return current
    if (
        member is not None
        and member.membership in ("leave", "ban")
        and not member.forgotten
        and member.position is not None
    ):
        return RoomAccess(room_id, user_id, member.membership, member.state_group, member.position)
    raise cannot_read()
