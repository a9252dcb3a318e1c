"""Rooms joined with partial state in `/sync`. They are shown at once, to every sync
(the user reads and sends at once; a client that does not lazy-load members sees the
few members we know). Once their full state has come in, a sync that does not
lazy-load members gets each such room with its whole state, as `full_state` would give
it, and its timeline from the token on (nothing sent twice). Synapse instead leaves
these rooms out of such syncs until they are full, then sends them as newly joined;
a room just joined missing from the client's sync for as long as a big room's state
takes to come in was judged worse than a member list that fills in later."""

from __future__ import annotations

from collections.abc import Collection

from homeserver.services.sync.state import RoomPlan
from homeserver.storage.core.pool import Connection
from homeserver.storage.remote import partial_state
from homeserver.storage.rooms import memberships


async def with_full_states(
    conn: Connection,
    user_id: str,
    plans: list[RoomPlan],
    joined: Collection[str],
    since: int,
    upto: int,
) -> list[RoomPlan]:
    """`plans`, where each joined room whose full state came in within (since, upto]
    is planned with its whole state."""
    made_full = await partial_state.made_full_between(conn, sorted(joined), since, upto)
    if not made_full:
        return plans
    kept = [p for p in plans if p.room_id not in made_full]
    for room_id in sorted(made_full):
        row = await memberships.get_membership(conn, room_id, user_id)
        if row is not None and row.membership == "join":
            kept.append(
                RoomPlan(room_id, "join", row.event_id, row.stream_ordering, since, upto, True)
            )
    return kept
