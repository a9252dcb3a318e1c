"""Reading a room's state and members, as far as the reader may see it: members read
the current state, users who left read the state as it was when they left, and
anyone may read a world-readable room."""

from __future__ import annotations

import asyncio
from typing import Any

from federation.events import MEMBER
from federation.types import JsonDict
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.timeline.format import format_events
from homeserver.services.timeline.pagination import Token, parse_token, resolve
from homeserver.services.timeline.visibility import cannot_read, event_of, room_access
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.remote import partial_state
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, state
from homeserver.storage.rooms.state import StateMap
from homeserver.storage.timeline import timeline
from homeserver.storage.timeline.timeline import Position

# How long /members waits for a room's full state, and how often it looks.
FULL_STATE_WAIT_S = 300.0
FULL_STATE_POLL_S = 0.25
MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})


def _membership_param(value: str | None, name: str) -> str | None:
    if value is not None and value not in MEMBERSHIPS:
        raise invalid_param(f"{name} must be one of {', '.join(sorted(MEMBERSHIPS))}")
    return value


class RoomStateService:
    """A room's state and members, as far as the reader may see them."""

    def __init__(self, db: Database, replicas: Replicas, cache: EventCache) -> None:
        self.db = db
        self.replicas = replicas
        self.cache = cache

    async def room_state(self, requester: Requester, room_id: str) -> list[JsonDict]:
        """Every state event of the room, as the requester may see it."""
        async with self.db.pool.connection() as conn:
            access = await room_access(conn, self.cache, requester.user_id, room_id)
            if access.upper is None:
                ids = await state.get_current_state(conn, room_id)
            elif access.state_group is not None:
                ids = await state.get_state(conn, access.state_group)
            else:
                ids = {}
            return await format_events(conn, self.cache, sorted(ids.values()))

    async def state_event(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        *,
        as_event: bool,
    ) -> JsonDict:
        """One state event (or its content), or 404 M_NOT_FOUND when the room has none."""
        key = (event_type, state_key)
        async with self.db.pool.connection() as conn:
            access = await room_access(conn, self.cache, requester.user_id, room_id)
            if access.upper is None:
                ids = await state.get_current_state(conn, room_id, [key])
            elif access.state_group is not None:
                ids = await state.get_state(conn, access.state_group, [key])
            else:
                ids = {}
            event_id = ids.get(key)
            formatted = await format_events(conn, self.cache, [event_id] if event_id else [])
        if not formatted:
            raise not_found(f"No {event_type} state with key {state_key!r} in this room")
        event = formatted[0]
        if as_event:
            return event
        content: JsonDict = event["content"]
        return content

    async def members(
        self,
        requester: Requester,
        room_id: str,
        *,
        at: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[JsonDict]:
        """The room's m.room.member events, at a point in history when `at` is given.

        With both filters given, an event passes when either passes (the spec's "or").
        """
        wanted = _membership_param(membership, "membership")
        unwanted = _membership_param(not_membership, "not_membership")
        token = parse_token(at) if at is not None else None
        await self._await_full_state(room_id)
        if token is not None:
            # History up to the client's token: a replica that has replayed it. A refusal
            # there (the user's join not replayed yet) is decided again on the primary.
            stream = token.position.stream if token.position is not None else token.stream
            assert stream is not None
            source = self.replicas.pool_for("events", stream)
            if source is not self.db.pool:
                try:
                    async with source.connection() as conn:
                        return await self._members(
                            conn, requester, room_id, token, wanted, unwanted
                        )
                except ServiceError as exc:
                    if exc.status not in (403, 404):
                        raise
        async with self.db.pool.connection() as conn:
            return await self._members(conn, requester, room_id, token, wanted, unwanted)

    async def _await_full_state(self, room_id: str) -> None:
        """Hold the answer while the room has partial state (joined over federation
        with its members omitted), as Synapse does: the list would miss most members.
        Bounded, so a fetch that cannot finish answers with what is known."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FULL_STATE_WAIT_S
        while loop.time() < deadline:
            async with self.db.pool.connection() as conn:
                if not await partial_state.partial_among(conn, [room_id]):
                    return
            await asyncio.sleep(FULL_STATE_POLL_S)

    async def _members(
        self,
        conn: Connection,
        requester: Requester,
        room_id: str,
        token: Token | None,
        wanted: str | None,
        unwanted: str | None,
    ) -> list[JsonDict]:
        access = await room_access(conn, self.cache, requester.user_id, room_id)
        if token is None and access.upper is None:
            ids = await state.get_current_state_of_type(conn, room_id, "m.room.member")
        elif token is None:
            group = access.state_group
            ids = await state.get_state_of_type(conn, group, "m.room.member") if group else {}
        else:
            position = await resolve(conn, room_id, token)
            if access.upper is not None:
                position = min(position, access.upper)
            ids = await _members_at(conn, self.cache, room_id, position)
        rows = await event_store.get_events(conn, ids.values())

        def passes(member: str | None) -> bool:
            if wanted is None and unwanted is None:
                return True
            return (wanted is not None and member == wanted) or (
                unwanted is not None and member != unwanted
            )

        keep = sorted(
            eid for eid, row in rows.items() if passes(event_of(self.cache, row).membership)
        )
        return await format_events(conn, self.cache, keep, rows=rows)

    async def joined_members(self, requester: Requester, room_id: str) -> dict[str, Any]:
        """Display names and avatars of the joined members; for members (or anyone, in a
        world-readable room); waits for a partial room's full state as `members` does."""
        async with self.db.pool.connection() as conn:
            access = await room_access(conn, self.cache, requester.user_id, room_id)
            if access.upper is not None:
                raise cannot_read()
        await self._await_full_state(room_id)
        async with self.db.pool.connection() as conn:
            rows = await memberships.members_of_room(conn, room_id)
        # The schema makes both strings: a member without one has the key absent, not null.
        return {
            row.user_id: {
                key: value
                for key, value in (
                    ("display_name", row.displayname),
                    ("avatar_url", row.avatar_url),
                )
                if value is not None
            }
            for row in rows
        }


async def _members_at(
    conn: Connection, cache: EventCache, room_id: str, position: Position
) -> StateMap:
    """The member events at a point of the timeline: the state after the last event up
    to it, or (a point before the first event held here, like the gap before our join
    to a room over federation) the state before the first event after it."""
    group = await timeline.state_group_at(conn, room_id, position)
    if group is not None:
        return await state.get_state_of_type(conn, group, MEMBER)
    first = await timeline.first_event_after(conn, room_id, position)
    if first is None:
        return {}
    event_id, group = first
    ids = await state.get_state_of_type(conn, group, MEMBER)
    event = (await load_events(conn, cache, [event_id])).get(event_id)
    if event is None or event.type != MEMBER or event.state_key is None:
        return ids
    # Before a member event, its target's membership is the one it replaced, which
    # the auth rules made one of its auth events.
    key = (MEMBER, event.state_key)
    ids.pop(key, None)
    for auth in (await load_events(conn, cache, event.auth_event_ids)).values():
        if auth.state_tuple == key:
            ids[key] = auth.event_id
    return ids
