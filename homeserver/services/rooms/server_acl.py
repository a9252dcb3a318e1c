"""Enforcing rooms' server ACLs (server-server "Server Access Control Lists").

In: every federation request about a room asks `check` (or `allows`) whether the
requesting server is let in by the room's current `m.room.server_acl`: the room-scoped
endpoints answer 403 M_FORBIDDEN, PDUs of a /send transaction are refused one by one,
and typing and receipt EDUs are dropped. This runs on every such request, so it costs
one primary-key read of current state; the parsed ACL is kept per event id (an event
never changes, so the entry can never be stale, in this process or another).

Out: nothing is withheld. The spec asks servers to keep sending a room's events to
denied servers that are still resident (their users stay in the room; the ACL only
stops those servers from acting in it), and Synapse does the same.

Local: an ACL event that would shut out our own server is refused before it is sent
(400), since our users would lose the room, and ACL events are not redacted (a redacted
ACL has no `allow` and would deny every server).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from federation.server_acl import SERVER_ACL, SERVER_ACL_KEY, ServerAcl, parse_acl
from homeserver.services.core.errors import ServiceError, forbidden
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import state

CACHED_ACLS = 1024
DENIED = "Server is denied by the room's server ACL"


class ServerAclService:
    """Rooms' current server ACLs, parsed once per ACL event."""

    def __init__(self, db: Database, cache: EventCache) -> None:
        self.db = db
        self.cache = cache
        self._parsed: OrderedDict[str, ServerAcl] = OrderedDict()

    async def room_acl(self, room_id: str) -> ServerAcl | None:
        """The room's current ACL, or None when it has none (or we do not hold the room)."""
        async with self.db.pool.connection() as conn:
            ids = await state.get_current_state(conn, room_id, [SERVER_ACL_KEY])
            event_id = ids.get(SERVER_ACL_KEY)
            if event_id is None:
                return None
            acl = self._parsed.get(event_id)
            if acl is not None:
                self._parsed.move_to_end(event_id)
                return acl
            found = await load_events(conn, self.cache, [event_id])
        event = found.get(event_id)
        if event is None:
            return None
        acl = parse_acl(event.content)
        self._parsed[event_id] = acl
        if len(self._parsed) > CACHED_ACLS:
            self._parsed.popitem(last=False)
        return acl

    async def allows(self, server_name: str, room_id: str) -> bool:
        """Whether `server_name` may act in `room_id` by its current ACL."""
        acl = await self.room_acl(room_id)
        return acl is None or acl.allows(server_name)

    async def check(self, server_name: str, room_id: str) -> None:
        """Raises 403 M_FORBIDDEN when the room's ACL denies `server_name`."""
        if not await self.allows(server_name, room_id):
            raise forbidden(DENIED)


def check_own_acl(
    event_type: str, state_key: str | None, content: Mapping[str, Any], our_server: str
) -> None:
    """Refuses (400) a local ACL event that would deny our own server: once sent, no
    server of ours could answer for the room again, and the sender could not undo it."""
    if event_type == SERVER_ACL and state_key == "" and not parse_acl(content).allows(our_server):
        raise ServiceError(
            400, "M_FORBIDDEN", "This server ACL would deny this server: it was not sent"
        )


def is_acl_event(event_type: str, state_key: str | None) -> bool:
    return event_type == SERVER_ACL and state_key == ""
