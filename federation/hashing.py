"""Content hashes, reference hashes and event ids (spec: server-server "Signing Events",
room versions "Event IDs").

The content hash covers the full event and lets a server detect that content was removed
(then the event is redacted). The reference hash covers the redacted event, so it is
stable under redaction; from room v3 it is the event id. The same redacted bytes are what
the origin signs, so `redacted_signing_bytes` is computed once per event and reused.
"""

from __future__ import annotations

import hashlib
from typing import Any

from federation import canonical_json, unpadded_base64
from federation.events import Event
from federation.redaction import redact
from federation.room_versions import EventIdFormat, RoomVersion
from federation.types import JsonDict

_NOT_IN_CONTENT_HASH = frozenset({"unsigned", "signatures", "hashes"})


def content_hash_bytes(pdu: JsonDict, *, needs_slow_path: bool = False) -> bytes:
    """The canonical bytes the content hash covers: the event minus unsigned/signatures/hashes.

    `pdu` must have passed `canonical_json.check`; `needs_slow_path` is its result.
    """
    stripped = {key: value for key, value in pdu.items() if key not in _NOT_IN_CONTENT_HASH}
    return canonical_json.encode_checked(stripped, needs_slow_path=needs_slow_path)


def redacted_signing_bytes(
    pdu: JsonDict, room_version: RoomVersion, *, needs_slow_path: bool = False
) -> bytes:
    """Canonical bytes of the redacted event minus signatures and unsigned.

    These are both what servers sign and what the reference hash covers. `pdu` must have
    passed `canonical_json.check`; `needs_slow_path` is its result.
    """
    redacted = redact(pdu, room_version, copy=False)
    redacted.pop("signatures", None)
    return canonical_json.encode_checked(redacted, needs_slow_path=needs_slow_path)


def compute_content_hash(pdu: JsonDict, room_version: RoomVersion) -> str:
    """The unpadded base64 sha256 content hash, as it goes in `hashes.sha256`."""
    slow = canonical_json.check(pdu, strict=room_version.strict_canonical_json)
    digest = hashlib.sha256(content_hash_bytes(pdu, needs_slow_path=slow)).digest()
    return unpadded_base64.encode(digest)


def compute_reference_hash(pdu: JsonDict, room_version: RoomVersion) -> bytes:
    """The sha256 reference hash of the event (raw digest)."""
    slow = canonical_json.check(pdu, strict=room_version.strict_canonical_json)
    return hashlib.sha256(redacted_signing_bytes(pdu, room_version, needs_slow_path=slow)).digest()


def event_id_from_reference_hash(reference_hash: bytes, room_version: RoomVersion) -> str:
    """`$` + the hash in the version's alphabet (standard for room v3, URL-safe from v4)."""
    urlsafe = room_version.event_id_format is EventIdFormat.V3
    return "$" + unpadded_base64.encode(reference_hash, urlsafe=urlsafe)


def compute_event_id(pdu: JsonDict, room_version: RoomVersion) -> str:
    """The event's id; rooms v1 and v2 carry it in the event, later ones derive it.

    Raises ValueError (or its subclass `CanonicalJsonError`) if there is none to find.
    """
    if room_version.event_id_format is EventIdFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("room v1/v2 event without a string event_id")
        return event_id
    return event_id_from_reference_hash(compute_reference_hash(pdu, room_version), room_version)


def event_from_pdu(pdu: JsonDict, room_version: RoomVersion) -> Event:
    """An `Event` for a PDU whose id is not known yet (for v1/v2 read from `event_id`)."""
    return Event(pdu, room_version, compute_event_id(pdu, room_version))


def event_reference(event: Event) -> list[Any]:
    """How room v1/v2 events point at `event` in prev_events/auth_events: [id, hashes]."""
    digest = compute_reference_hash(event.pdu, event.room_version)
    return [event.event_id, {"sha256": unpadded_base64.encode(digest)}]
