"""Rooms joined with partial state in `/sync`, as Synapse shows them: a sync that does
not lazy-load members leaves them out (their member list is far from whole), and once
their full state has come in sends them as newly joined, with the whole state. A
lazy-loading sync shows them all along: it needs only the members of the senders it
shows."""

from __future__ import annotations

from collections.abc import Collection

from homeserver.services.sync.state import RoomPlan
from homeserver.storage.core.pool import Connection
from homeserver.storage.remote import partial_state
from homeserver.storage.rooms import memberships


async def partial_state_view(
    conn: Connection,
    user_id: str,
    plans: list[RoomPlan],
    joined: Collection[str],
    since: int | None,
    upto: int,
) -> tuple[list[RoomPlan], set[str]]:
    """The plans of a sync that does not lazy-load members, and the joined rooms it
    leaves out for their partial state."""
    candidates = sorted(set(joined) | {p.room_id for p in plans if p.section == "join"})
    hidden = await partial_state.partial_among(conn, candidates)
    kept = [p for p in plans if not (p.section == "join" and p.room_id in hidden)]
    if since is None:
        return kept, hidden
    visible = [r for r in candidates if r not in hidden]
    made_full = await partial_state.made_full_between(conn, visible, since, upto)
    if not made_full:
        return kept, hidden
    kept = [p for p in kept if p.room_id not in made_full]
    for room_id in sorted(made_full):
        row = await memberships.get_membership(conn, room_id, user_id)
        if row is not None and row.membership == "join":
            kept.append(
                RoomPlan(room_id, "join", row.event_id, row.stream_ordering, 0, upto, True, True)
            )
    return kept, hidden
