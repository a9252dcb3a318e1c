"""Membership across servers, our side: joining a room another server holds (make_join
then send_join, verifying the state and auth chain it answers with), knocking on one
(make_knock then send_knock), inviting a user of another server (their server co-signs
the invite), and refusing an invite to a room we hold no state of (make_leave then
send_leave through the inviting server).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from federation.auth_rules import AuthError, check_auth
from federation.builder import build_event
from federation.events import CREATE_KEY, MEMBER, Event
from federation.identifiers import domain_of, server_name_of
from federation.keys import SigningKey
from federation.room_versions import KNOWN_ROOM_VERSIONS, UnsupportedRoomVersion, get_room_version
from federation.types import JsonDict
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, forbidden, not_found
from homeserver.services.remote.checks import (
    PduRefused,
    auth_against_own,
    authorise_batch,
    check_many,
    check_one,
    event_id_of,
    keys_for,
)
from homeserver.services.remote.client import (
    FederationClient,
    FederationError,
    RequestFailed,
    quote_segment,
)
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.partial_state import PartialStateSync
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.state import persist_outliers, replace_current_state
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.rooms.writer import EventWriter, PersistedEvent, RoomWriter, event_record
from homeserver.services.sync.rooms import STRIPPED_STATE_TYPES
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import backfill as backfill_store
from homeserver.storage.remote import dag as fed_store
from homeserver.storage.remote import partial_state as partial_store
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import invite_state, memberships, state

log = logging.getLogger(__name__)

FED = "/_matrix/federation"
T = TypeVar("T")


def _failure(exc: FederationError) -> ServiceError:
    if isinstance(exc, RequestFailed) and 400 <= exc.status < 500:
        return ServiceError(exc.status, exc.errcode or "M_UNKNOWN", exc.error)
    return ServiceError(502, "M_UNKNOWN", f"Cannot reach the room's servers: {exc}")


MAX_STRIPPED_STATE = 50


def clean_stripped_state(value: Any) -> list[JsonDict]:
    """The well-formed stripped state events of a remote server's invite_room_state or
    knock_room_state, trimmed to the four keys a client sees; anything else is dropped,
    since it only decorates the invite and must not fail it."""
    out: list[JsonDict] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        kept = {k: item.get(k) for k in ("type", "state_key", "sender", "content")}
        if all(isinstance(kept[k], str) for k in ("type", "state_key", "sender")) and isinstance(
            kept["content"], dict
        ):
            out.append(kept)
    return out[:MAX_STRIPPED_STATE]


async def store_out_of_room(
    events: EventWriter, event: Event, stripped_state: list[JsonDict] | None = None
) -> PersistedEvent:
    """Keep a membership event of a room we hold no state of (a remote invite, knock,
    or their refusal): it gets a stream position so the user's sync sees it, and no
    state; `stripped_state` is what the user's sync shows of the room instead."""
    async with events.writer(event.room_id, create=(event.room_version, event.sender)) as w:
        if stripped_state is not None and event.state_key is not None:
            await invite_state.put(
                w.conn, event.room_id, event.state_key, event.event_id, stripped_state
            )
        known = await fed_store.known_event_ids(w.conn, [event.event_id])
        [position] = await w.allocator.allocate("events")
        w.positions.append(position)
        if not known:
            await event_store.insert_event(
                w.conn, event_record(event), stream_ordering=position, state_group=None
            )
        await w.set_membership(event, position)
        persisted = PersistedEvent(event, position)
        w.persisted.append(persisted)
        return persisted


class FederationJoins:
    """Our users' membership in rooms we hold no state of, through the servers that do:
    joining, knocking, refusing an invite; and other servers co-signing our invites."""

    def __init__(
        self,
        db: Database,
        events: EventWriter,
        event_cache: EventCache,
        client: FederationClient,
        keyring: KeyRing,
        room_locks: RoomLocks,
        partial_state: PartialStateSync,
        signing_key: SigningKey,
        server_name: str,
    ) -> None:
        self.db = db
        self.partial_state = partial_state
        self.events = events
        self.event_cache = event_cache
        self.client = client
        self.keyring = keyring
        self.room_locks = room_locks
        self.signing_key = signing_key
        self.server_name = server_name

    # ---- aliases

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """Ask the alias's server which room it names, and who can help to join it."""
        server = alias.split(":", 1)[1] if ":" in alias else ""
        try:
            answer = await self.client.get_json(
                server, f"{FED}/v1/query/directory", {"room_alias": alias}
            )
        except FederationError as exc:
            raise _failure(exc) from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str):
            raise not_found(f"Room alias {alias} not found")
        listed = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return room_id, [server, *listed]

    # ---- joining

    async def join(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> None:
        """Join a room through the first of `servers` that lets us."""
        await self._through(
            "join", room_id, servers, lambda s: self._join_via(s, room_id, user_id, content)
        )

    async def knock(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> PersistedEvent:
        """Knock on a room we hold no state of, through the first of `servers` that
        takes the knock; the room's stripped state it answers with is kept for sync."""
        return await self._through(
            "knock", room_id, servers, lambda s: self._knock_via(s, room_id, user_id, content)
        )

    async def _through(
        self,
        action: str,
        room_id: str,
        servers: list[str],
        attempt: Callable[[str], Awaitable[T]],
    ) -> T:
        """`attempt` with each of `servers` in turn (not us) until one succeeds."""
        candidates = list(dict.fromkeys(s for s in servers if s and s != self.server_name))
        if not candidates:
            raise not_found(f"No known servers to {action} {room_id} through")
        error: ServiceError | None = None
        for server in candidates:
            try:
                return await attempt(server)
            except FederationError as exc:
                error = _failure(exc)
                log.info("%s %s via %s failed: %s", action, room_id, server, exc)
            except ServiceError as exc:
                error = exc
        assert error is not None
        raise error

    async def _knock_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any]
    ) -> PersistedEvent:
        client = self.client
        path = f"{FED}/v1/make_knock/{quote_segment(room_id)}/{quote_segment(user_id)}"
        template = await client.get_json(server, path, {"ver": list(KNOWN_ROOM_VERSIONS)})
        _, knock = self._from_template(template, room_id, user_id, "knock", content)
        path = f"{FED}/v1/send_knock/{quote_segment(room_id)}/{quote_segment(knock.event_id)}"
        answer = await client.put_json(server, path, knock.pdu)
        given = answer.get("knock_room_state") if isinstance(answer, dict) else None
        return await store_out_of_room(self.events, knock, clean_stripped_state(given))

    async def _join_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any]
    ) -> None:
        path = f"{FED}/v1/make_join/{quote_segment(room_id)}/{quote_segment(user_id)}"
        template = await self.client.get_json(server, path, {"ver": list(KNOWN_ROOM_VERSIONS)})
        room_version, join = self._from_template(template, room_id, user_id, "join", content)
        path = f"{FED}/v2/send_join/{quote_segment(room_id)}/{quote_segment(join.event_id)}"
        # Always ask for the state without members (MSC3706): a resident that does not
        # know the parameter ignores it and answers with the whole state.
        answer = await self.client.put_json(server, path, join.pdu, query={"omit_members": "true"})
        if not isinstance(answer, dict):
            raise ServiceError(502, "M_UNKNOWN", "send_join answered nonsense")
        join = await self._cosigned(answer, join, room_version)
        partial = answer.get("members_omitted") is True
        servers = answer.get("servers_in_room") if partial else None
        pdus = [p for key in ("state", "auth_chain") for p in answer.get(key) or []]
        batch = await check_many(self.keyring, pdus, room_version, room_id)
        rejected = authorise_batch(batch, {}, set())
        state_ids = {event_id_of(p, room_version) for p in answer.get("state") or []}
        room_state = {
            e.state_tuple: e.event_id
            for e in batch.values()
            if e.is_state and e.event_id in state_ids and e.event_id not in rejected
        }
        create_id = room_state.get(CREATE_KEY)
        if create_id is None:
            raise ServiceError(502, "M_UNKNOWN", "send_join returned no create event")
        reason = auth_against_own(join, batch, {}, set(rejected))
        if reason is None:
            # With partial state, what the join cites stands in for members we lack.
            auth_state = {k: batch[v] for k, v in room_state.items()}
            if partial:
                for auth_id in join.auth_event_ids:
                    auth = batch.get(auth_id)
                    if auth is not None and auth.is_state:
                        auth_state.setdefault(auth.state_tuple, auth)
            try:
                check_auth(join, auth_state)
            except AuthError as exc:
                reason = exc.reason
        if reason is not None:
            raise forbidden(f"Our join is not allowed: {reason}")
        listed = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        await self._store_join(
            join, batch, rejected, room_state, (server, listed) if partial else None
        )
        if partial:
            self.partial_state.begin(room_id)

    async def _cosigned(self, answer: JsonDict, join: Event, room_version: Any) -> Event:
        """Our join as the resident co-signed it (a restricted join), else as sent."""
        signed = answer.get("event")
        if not isinstance(signed, dict):
            return join
        lookup = await self.keyring.lookup_for_pdus([signed], room_version)
        try:
            cosigned = check_one(signed, room_version, lookup)
        except PduRefused as exc:
            raise ServiceError(502, "M_UNKNOWN", f"bad co-signed join: {exc}") from None
        return cosigned if cosigned.event_id == join.event_id else join

    async def _store_join(
        self,
        join: Event,
        batch: dict[str, Event],
        rejected: dict[str, str],
        room_state: dict[tuple[str, str], str],
        partial: tuple[str, list[str]] | None,
    ) -> None:
        """Persist the room's state as the resident gave it and our join on it; with
        `partial` (the server joined through, the servers it named), mark the room's
        state partial until the background fetch completes it."""
        room_id = join.room_id
        creator = batch[room_state[CREATE_KEY]].sender
        async with self.room_locks.room_lock(room_id):
            async with self.events.writer(room_id, create=(join.room_version, creator)) as writer:
                await persist_outliers(writer.conn, self.event_cache, batch.values(), rejected)
                group = await state.create_group(writer.conn, room_id, None, room_state, 0)
                await replace_current_state(writer, room_state, group)
                new_key = join.state_tuple not in room_state
                await writer.persist(join, prev_ids=[], new_key=new_key)
                # History before the join is a hole /messages may backfill.
                await backfill_store.note_placed(
                    writer.conn, room_id, join.event_id, join.prev_event_ids, in_timeline=True
                )
                if partial is not None:
                    via, servers = partial
                    await partial_store.mark_partial(
                        writer.conn, room_id, join.event_id, via, servers, now_ms()
                    )

    def _from_template(
        self,
        template: Any,
        room_id: str,
        user_id: str,
        membership: str,
        extra: dict[str, Any],
    ) -> tuple[Any, Event]:
        """Our signed membership event built from a make_join/make_leave template."""
        proto = template.get("event") if isinstance(template, dict) else None
        if not isinstance(proto, dict):
            raise ServiceError(502, "M_UNKNOWN", "The resident server sent no event template")
        try:
            room_version = get_room_version(str(template.get("room_version", "1")))
        except UnsupportedRoomVersion as exc:
            raise ServiceError(400, "M_UNSUPPORTED_ROOM_VERSION", str(exc)) from None
        given = proto.get("content")
        content = {**(given if isinstance(given, dict) else {}), **extra, "membership": membership}
        depth = proto.get("depth")
        try:
            event = build_event(
                room_version,
                self.signing_key,
                event_type=MEMBER,
                sender=user_id,
                content=content,
                prev_events=list(proto.get("prev_events") or []),
                auth_events=list(proto.get("auth_events") or []),
                depth=depth if isinstance(depth, int) else 1,
                origin_server_ts=now_ms(),
                room_id=room_id,
                state_key=user_id,
            )
        except (ValueError, TypeError) as exc:
            raise ServiceError(502, "M_UNKNOWN", f"Unusable event template: {exc}") from None
        return room_version, event

    # ---- inviting a user of another server

    async def invite(self, writer: RoomWriter, event: Event) -> Event:
        """Have the invitee's server co-sign our invite; the co-signed event."""
        target = event.state_key or ""
        server = domain_of(target)
        # The room's stripped state, and the inviter's member event (who invites).
        keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [(MEMBER, event.sender)]
        ids = await state.get_current_state(writer.conn, writer.room_id, keys)
        rows = await event_store.get_events(writer.conn, ids.values())
        stripped = []
        for row in rows.values():
            pdu = orjson.loads(row.json)
            stripped.append({k: pdu.get(k) for k in ("type", "state_key", "content", "sender")})
        body = {
            "event": event.pdu,
            "room_version": event.room_version.identifier,
            "invite_room_state": stripped,
        }
        path = f"{FED}/v2/invite/{quote_segment(event.room_id)}/{quote_segment(event.event_id)}"
        try:
            answer = await self.client.put_json(server, path, body)
        except FederationError as exc:
            raise _failure(exc) from None
        signed = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(signed, dict):
            raise ServiceError(502, "M_UNKNOWN", "The invitee's server did not sign the invite")
        lookup = await keys_for(self.keyring, [signed], event.room_version, server)
        try:
            cosigned = check_one(signed, event.room_version, lookup, origin=server)
        except PduRefused as exc:
            raise ServiceError(502, "M_UNKNOWN", f"Bad co-signed invite: {exc}") from None
        if cosigned.event_id != event.event_id:
            raise ServiceError(502, "M_UNKNOWN", "The invitee's server changed the invite")
        return cosigned

    # ---- refusing an invite to a room we hold no state of

    async def leave_unknown_room(self, room_id: str, user_id: str, reason: str | None) -> None:
        async with self.db.pool.connection() as conn:
            row = await memberships.get_membership(conn, room_id, user_id)
        if row is None or row.membership not in ("invite", "knock"):
            raise forbidden("You are not in this room")
        servers = [server_name_of(row.sender, "@") or "", server_name_of(room_id, "!") or ""]
        extra = {"reason": reason} if reason is not None else {}
        error: ServiceError = not_found(f"No known servers to leave {room_id} through")
        for server in dict.fromkeys(s for s in servers if s and s != self.server_name):
            try:
                path = f"{FED}/v1/make_leave/{quote_segment(room_id)}/{quote_segment(user_id)}"
                template = await self.client.get_json(server, path)
                _, leave = self._from_template(template, room_id, user_id, "leave", extra)
                path = (
                    f"{FED}/v2/send_leave/{quote_segment(room_id)}/{quote_segment(leave.event_id)}"
                )
                await self.client.put_json(server, path, leave.pdu)
            except FederationError as exc:
                error = _failure(exc)
                continue
            await store_out_of_room(self.events, leave)
            return
        raise error
