"""Restricted joins (rooms v8+; `knock_restricted` from v10): the resident server names
one of its joined users, able to invite, to vouch for a joiner who is a member of one of
the rooms the join rules allow. Local joins and other servers' make_join both ask here."""

from __future__ import annotations

from federation.events import CREATE_KEY, JOIN_RULES_KEY, POWER_LEVELS_KEY
from federation.identifiers import domain_of
from federation.power_levels import named_level, user_level
from homeserver.services.core.errors import ServiceError
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms import memberships, state

RESTRICTED_RULES = ("restricted", "knock_restricted")


def _allowed_rooms(allow: object) -> list[str]:
    entries = allow if isinstance(allow, list) else []
    return [
        a["room_id"]
        for a in entries
        if isinstance(a, dict)
        and a.get("type") == "m.room_membership"
        and isinstance(a.get("room_id"), str)
    ]


async def join_authoriser(
    conn: Connection, cache: EventCache, room_id: str, user_id: str, server_name: str
) -> str | None:
    """The local user to name in `join_authorised_via_users_server`, or None when the
    join needs no one (the room is not restricted, or the user is invited or joined).

    Raises M_UNABLE_TO_AUTHORISE_JOIN when the user is in none of the allowed rooms, and
    M_UNABLE_TO_GRANT_JOIN when no local member may invite."""
    keys = [JOIN_RULES_KEY, CREATE_KEY, POWER_LEVELS_KEY]
    ids = await state.get_current_state(conn, room_id, keys)
    found = await load_events(conn, cache, ids.values())
    rules, create, power = (found.get(ids.get(key, "")) for key in keys)
    if rules is None or rules.content.get("join_rule") not in RESTRICTED_RULES:
        return None
    if not rules.room_version.restricted_join:
        return None
    current = await memberships.get_membership(conn, room_id, user_id)
    if current is not None and current.membership in ("join", "invite"):
        return None
    inside = False
    for other in _allowed_rooms(rules.content.get("allow")):
        row = await memberships.get_membership(conn, other, user_id)
        inside = inside or (row is not None and row.membership == "join")
    if not inside:
        raise ServiceError(
            400, "M_UNABLE_TO_AUTHORISE_JOIN", "You are not in any room this room allows"
        )
    needed = named_level(power, "invite")
    members = await memberships.members_of_room(conn, room_id)
    able = sorted(
        m.user_id
        for m in members
        if domain_of(m.user_id) == server_name and user_level(m.user_id, create, power) >= needed
    )
    if not able:
        raise ServiceError(400, "M_UNABLE_TO_GRANT_JOIN", "No member here may let you in")
    return able[0]
