"""Checking PDUs that other servers hand us: one at a time (signatures, content hash,
the origin's claim to it) and in batches (an auth chain, a room's state), where each
event is authorised against its own auth events in the order they depend on each
other. Used by inbound transactions, gap filling and joins."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from federation import hashing
from federation.auth_rules import AuthError, check_auth, check_auth_events_shape
from federation.events import CREATE_KEY, Event
from federation.identifiers import create_event_id_for_room, domain_of
from federation.keys import KeyLookup
from federation.pdu_checks import InvalidPdu, check_pdu
from federation.room_versions import RoomVersion
from federation.signing import SignatureError, verify_signed_by
from homeserver.services.remote.keyring import KeyRing

log = logging.getLogger(__name__)


class PduRefused(Exception):
    """A PDU failed its format, signature or origin checks; the message says why."""


def event_id_of(pdu: object, room_version: RoomVersion) -> str | None:
    """The id a PDU claims, for keying answers; None when it has none to compute."""
    if not isinstance(pdu, dict):
        return None
    try:
        return hashing.compute_event_id(pdu, room_version)
    except (ValueError, TypeError, AttributeError):
        return None


async def keys_for(
    keyring: KeyRing, pdus: list[Any], room_version: RoomVersion, origin: str | None = None
) -> KeyLookup:
    """Keys for the signatures the PDUs need, and for `origin`'s on them (which
    `check_one` wants when the origin relays another server's event)."""
    pdus = [p for p in pdus if isinstance(p, dict)]
    required = await keyring.lookup_for_pdus(pdus, room_version)
    if origin is None:
        return required
    key_ids = {
        key_id
        for pdu in pdus
        if isinstance(pdu.get("signatures"), dict)
        and isinstance(pdu["signatures"].get(origin), dict)
        for key_id in pdu["signatures"][origin]
        if isinstance(key_id, str) and key_id.startswith("ed25519:")
    }
    if not key_ids:
        return required
    extra = await keyring.lookup({origin: key_ids}, 0)
    return lambda server, key_id: required(server, key_id) or extra(server, key_id)


def check_one(
    pdu: object, room_version: RoomVersion, lookup: KeyLookup, origin: str | None = None
) -> Event:
    """`check_pdu`, and when `origin` is given, that the origin may speak for the event:
    the sender is on it, or it signed the event too. Raises PduRefused."""
    try:
        event = check_pdu(pdu, room_version, lookup).event
    except (InvalidPdu, SignatureError) as exc:
        raise PduRefused(str(exc)) from None
    if origin is not None and domain_of(event.sender) != origin:
        assert isinstance(pdu, dict)
        try:
            signed = hashing.redacted_signing_bytes(pdu, room_version)
            verify_signed_by(signed, pdu.get("signatures"), origin, lookup)
        except (SignatureError, ValueError):
            raise PduRefused(f"{origin} neither sent nor signed this event") from None
    return event


async def check_many(
    keyring: KeyRing, pdus: Iterable[object], room_version: RoomVersion, room_id: str
) -> dict[str, Event]:
    """The PDUs of a batch that pass `check_one` and belong to `room_id`, by id."""
    items = [p for p in pdus if isinstance(p, dict)]
    lookup = await keyring.lookup_for_pdus(items, room_version)
    out: dict[str, Event] = {}
    for pdu in items:
        try:
            event = check_one(pdu, room_version, lookup)
        except PduRefused as exc:
            log.info("dropping a PDU of a batch for %s: %s", room_id, exc)
            continue
        if event.room_id == room_id:
            out[event.event_id] = event
    return out


def auth_order(events: Mapping[str, Event]) -> list[Event]:
    """`events` ordered so that each comes after those of its auth events in the batch."""
    ordered: list[Event] = []
    placed: set[str] = set()
    for root in sorted(events.values(), key=lambda e: (e.depth, e.event_id)):
        stack: list[tuple[Event, bool]] = [(root, False)]
        while stack:
            event, expanded = stack.pop()
            if event.event_id in placed:
                continue
            if expanded:
                placed.add(event.event_id)
                ordered.append(event)
                continue
            stack.append((event, True))
            for auth_id in event.auth_event_ids:
                auth = events.get(auth_id)
                if auth is not None and auth_id not in placed:
                    stack.append((auth, False))
    return ordered


def authorise_batch(
    events: Mapping[str, Event], known: Mapping[str, Event], known_rejected: set[str]
) -> dict[str, str]:
    """Check each event of the batch against its auth events (taken from the batch or
    from `known`, events we already hold); the reasons of those that fail, by id."""
    rejected: dict[str, str] = {}
    for event in auth_order(events):
        reason = auth_against_own(event, events, known, set(rejected) | known_rejected)
        if reason is not None:
            rejected[event.event_id] = reason
    return rejected


def auth_against_own(
    event: Event, batch: Mapping[str, Event], known: Mapping[str, Event], rejected: set[str]
) -> str | None:
    """Why `event` fails against the auth events it cites, or None when it passes."""
    cited: list[Event] = []
    for auth_id in event.auth_event_ids:
        auth = batch.get(auth_id) or known.get(auth_id)
        if auth is None:
            return f"auth event {auth_id} is unknown"
        cited.append(auth)
    try:
        check_auth_events_shape(event, cited, rejected)
        auth_state = {e.state_tuple: e for e in cited if e.is_state}
        if event.room_version.room_id_from_create_event and event.type != "m.room.create":
            create_id = create_event_id_for_room(event.room_id) or ""
            create = batch.get(create_id) or known.get(create_id)
            if create is None:
                return "the room's create event is unknown"
            auth_state[CREATE_KEY] = create
        check_auth(event, auth_state)
    except AuthError as exc:
        return exc.reason
    return None
