"""Membership across servers, the resident side: other servers' users joining, leaving
and knocking on our rooms (make_* hands out a template built on our current state,
send_* checks the signed event, authorises it against current state and persists it
through the local writer), and other servers inviting our users (we co-sign, and keep
the invite for the user's sync when we hold no state of the room)."""

from __future__ import annotations

from typing import Any

import orjson

from federation import hashing
from federation.auth_rules import AuthError, check_auth
from federation.events import AUTHORISING_USER, MEMBER, Event
from federation.identifiers import domain_of
from federation.keys import SigningKey
from federation.pdu_checks import InvalidPdu, check_format
from federation.room_versions import RoomVersion, UnsupportedRoomVersion, get_room_version
from federation.signing import add_signature, sign_bytes
from federation.types import JsonDict
from homeserver.services.core.errors import ServiceError, forbidden, not_found
from homeserver.services.remote.checks import PduRefused, check_one, keys_for
from homeserver.services.remote.joins import clean_stripped_state, store_out_of_room
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.sender import FederationSender
from homeserver.services.remote.state import StateBefore, auth_state_from
from homeserver.services.rooms.event_cache import EventCache, load_events
from homeserver.services.rooms.restricted import join_authoriser
from homeserver.services.rooms.writer import EventNotAllowed, EventWriter
from homeserver.services.sync.rooms import STRIPPED_STATE_TYPES
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.remote import room_servers
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, rooms, state

MAX_HEROES = 5
TEMPLATE_KEYS = (
    "type",
    "sender",
    "state_key",
    "content",
    "room_id",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
)


def bad(message: str) -> ServiceError:
    return ServiceError(400, "M_BAD_JSON", message)


class ResidentMembership:
    def __init__(
        self,
        db: Database,
        events: EventWriter,
        event_cache: EventCache,
        keyring: KeyRing,
        room_locks: RoomLocks,
        sender: FederationSender,
        signing_key: SigningKey,
        server_name: str,
    ) -> None:
        self.db = db
        self.events = events
        self.event_cache = event_cache
        self.keyring = keyring
        self.room_locks = room_locks
        self.sender = sender
        self.signing_key = signing_key
        self.server_name = server_name

    async def _room_version(self, room_id: str) -> RoomVersion:
        async with self.db.pool.connection() as conn:
            room = await rooms.get_room(conn, room_id)
        if room is None or room.current_state_group is None:
            raise not_found(f"Unknown room {room_id}")
        return get_room_version(room.room_version)

    # ---- make_join / make_leave / make_knock

    async def make(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: list[str] | None
    ) -> JsonDict:
        if domain_of(user_id) != origin:
            raise forbidden("The user is not on the requesting server")
        room_version = await self._room_version(room_id)
        if versions is not None and room_version.identifier not in versions:
            raise ServiceError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "Your server does not support this room's version",
                room_version=room_version.identifier,
            )
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._authoriser(room_id, user_id)
            if authoriser is not None:
                content[AUTHORISING_USER] = authoriser
        try:
            async with self.events.writer(room_id) as writer:
                event, _, _ = await writer.prepare(MEMBER, user_id, content, state_key=user_id)
        except EventNotAllowed as exc:
            raise forbidden(str(exc)) from None
        proto = {k: event.pdu[k] for k in TEMPLATE_KEYS if k in event.pdu}
        proto["origin"] = origin
        return {"room_version": room_version.identifier, "event": proto}

    async def _authoriser(self, room_id: str, user_id: str) -> str | None:
        async with self.db.pool.connection() as conn:
            return await join_authoriser(conn, self.event_cache, room_id, user_id, self.server_name)

    # ---- send_join / send_leave / send_knock

    async def send(
        self,
        origin: str,
        room_id: str,
        event_id: str,
        pdu: Any,
        membership: str,
        omit_members: bool = False,
    ) -> JsonDict:
        room_version = await self._room_version(room_id)
        pdu = self._cosigned(pdu, room_version)
        lookup = await keys_for(self.keyring, [pdu], room_version, origin)
        try:
            event = check_one(pdu, room_version, lookup, origin)
        except PduRefused as exc:
            raise bad(str(exc)) from None
        if (
            event.event_id != event_id
            or event.room_id != room_id
            or event.type != MEMBER
            or event.state_key != event.sender
            or event.membership != membership
            or domain_of(event.sender) != origin
        ):
            raise bad(f"Not a {membership} of the sender into this room")
        async with self.room_locks.room_lock(room_id):
            async with self.events.writer(room_id) as writer:
                before = await state.get_current_state(writer.conn, room_id)
                if not await fed_store.known_event_ids(writer.conn, [event.event_id]):
                    current = StateBefore(writer.state_group, None)
                    auth = await auth_state_from(writer.conn, self.event_cache, event, current)
                    try:
                        check_auth(event, auth)
                    except AuthError as exc:
                        raise forbidden(exc.reason) from None
                    tips = {eid for eid, _ in writer.extremities}
                    prevs = [p for p in event.prev_event_ids if p in tips]
                    await writer.persist(
                        event, prev_ids=prevs, new_key=event.state_tuple not in before
                    )
                # Relayed to the room's other servers from the same transaction, so that
                # a crash after the commit cannot keep the event from them.
                servers = await room_servers.servers_in_room(writer.conn, room_id)
                queued = await self.sender.queue_pdu(
                    writer.conn, servers - {origin}, event.event_id
                )
        self.sender.wake(queued)
        if membership == "join":
            return await self._join_answer(event, before, servers, omit_members)
        if membership == "knock":
            return {"knock_room_state": await self._stripped(before)}
        return {}

    def _cosign(self, event: Event) -> Event:
        pdu = self._signed(event.pdu, event.room_version)
        return Event(pdu, event.room_version, event.event_id)

    def _signed(
        self, pdu: dict[str, Any], room_version: RoomVersion, slow: bool = False
    ) -> dict[str, Any]:
        signed = hashing.redacted_signing_bytes(pdu, room_version, needs_slow_path=slow)
        key = self.signing_key
        signature = sign_bytes(signed, key)
        signatures = add_signature(pdu.get("signatures"), self.server_name, key.key_id, signature)
        return {**pdu, "signatures": signatures}

    def _cosigned(self, pdu: Any, room_version: RoomVersion) -> Any:
        """A restricted join naming one of our users, with our signature added: the
        event's checks want the authorising user's server to have signed it."""
        try:
            slow = check_format(pdu, room_version)
        except InvalidPdu as exc:
            raise bad(str(exc)) from None
        content = pdu.get("content")
        authoriser = content.get(AUTHORISING_USER) if isinstance(content, dict) else None
        if not isinstance(authoriser, str) or domain_of(authoriser) != self.server_name:
            return pdu
        return self._signed(pdu, room_version, slow)

    async def _join_answer(
        self,
        event: Event,
        before: dict[tuple[str, str], str],
        servers: set[str],
        omit_members: bool,
    ) -> JsonDict:
        """The state before the join and its auth chain. With `omit_members` (a joining
        server able to join with partial state, MSC3706): member events left out but
        for the room's heroes when it has no name, and no event in both lists."""
        async with self.db.pool.connection() as conn:
            if omit_members:
                heroes = await self._heroes(conn, event, before)
                state_ids = {e for k, e in before.items() if k[0] != MEMBER or k[1] in heroes}
            else:
                state_ids = set(before.values())
            chain_ids = await fed_store.auth_chain_ids(conn, state_ids | {event.event_id})
            if omit_members:
                chain_ids -= state_ids
            rows = await event_store.get_events(conn, state_ids | chain_ids)
        return {
            "origin": self.server_name,
            "state": [orjson.loads(rows[e].json) for e in sorted(state_ids) if e in rows],
            "auth_chain": [orjson.loads(rows[e].json) for e in sorted(chain_ids) if e in rows],
            "event": event.pdu,
            "members_omitted": omit_members,
            "servers_in_room": sorted(servers | {self.server_name}),
        }

    async def _heroes(
        self, conn: Connection, event: Event, before: dict[tuple[str, str], str]
    ) -> set[str]:
        """Up to 5 joined or invited members a client names an unnamed room after."""
        if ("m.room.name", "") in before or ("m.room.canonical_alias", "") in before:
            return set()
        members = await memberships.members_of_room(conn, event.room_id, ("join", "invite"))
        others = [m for m in members if m.user_id != event.sender]
        others.sort(key=lambda m: (m.stream_ordering or 0, m.user_id))
        return {m.user_id for m in others[:MAX_HEROES]}

    async def _stripped(self, current: dict[tuple[str, str], str]) -> list[JsonDict]:
        wanted = [current[(t, "")] for t in STRIPPED_STATE_TYPES if (t, "") in current]
        async with self.db.pool.connection() as conn:
            found = await load_events(conn, self.event_cache, wanted)
        return [
            {
                "type": e.type,
                "state_key": e.state_key,
                "content": dict(e.content),
                "sender": e.sender,
            }
            for e in found.values()
        ]

    # ---- invites of our users

    async def invite(self, origin: str, room_id: str, event_id: str, body: JsonDict) -> JsonDict:
        try:
            room_version = get_room_version(str(body.get("room_version", "1")))
        except UnsupportedRoomVersion:
            raise ServiceError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "Unsupported room version",
                room_version=str(body.get("room_version")),
            ) from None
        pdu = body.get("event")
        lookup = await keys_for(self.keyring, [pdu], room_version, origin)
        try:
            event = check_one(pdu, room_version, lookup, origin)
        except PduRefused as exc:
            raise bad(str(exc)) from None
        target = event.state_key or ""
        if (
            event.event_id != event_id
            or event.room_id != room_id
            or event.type != MEMBER
            or event.membership != "invite"
            or domain_of(target) != self.server_name
            or domain_of(event.sender) != origin
        ):
            raise bad("Not an invite of one of our users into this room")
        async with self.db.pool.connection() as conn:
            current = await memberships.get_membership(conn, room_id, target)
            holds_state = await fed_store.has_state(conn, room_id)
        if current is not None and current.membership == "ban":
            raise forbidden("The user is banned from the room")
        event = self._cosign(event)
        if not holds_state:
            given = body.get("invite_room_state")
            if given is None:  # older servers put it in the event's unsigned
                unsigned = event.pdu.get("unsigned")
                given = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
            await store_out_of_room(self.events, event, clean_stripped_state(given))
        return {"event": event.pdu}
