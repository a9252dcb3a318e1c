"""Building local events: fill in the content hash, sign as the origin, derive the id.

The order is fixed by the protocol: the content hash covers the whole event, the
signature covers the redacted event including that hash, and from room v3 the event id is
the hash of those same redacted bytes, so they are encoded once for both.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from federation import canonical_json, hashing, unpadded_base64
from federation.events import CREATE, Event
from federation.identifiers import server_name_of
from federation.keys import SigningKey
from federation.room_versions import EventIdFormat, RoomVersion
from federation.signing import sign_bytes


def build_event(
    room_version: RoomVersion,
    signing_key: SigningKey,
    *,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    prev_events: Sequence[Any],
    auth_events: Sequence[Any],
    depth: int,
    origin_server_ts: int,
    room_id: str | None = None,
    state_key: str | None = None,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
) -> Event:
    """A hashed and signed event, signed by the sender's server with `signing_key`.

    `prev_events`/`auth_events` are event ids, or for rooms v1/v2 the [id, hashes] pairs
    that `hashing.event_reference` makes. `room_id` may be omitted only for the create
    event of a room v12+ room, whose room id derives from its event id. `redacts` is
    placed where the room version keeps it (content from v11). `unsigned` is added after
    signing, as it is not covered by hashes or signatures.
    """
    origin = server_name_of(sender, "@")
    if origin is None:
        raise ValueError(f"sender {sender!r} is not a user id")
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": dict(content),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": list(prev_events),
        "auth_events": list(auth_events),
    }
    is_create = event_type == CREATE and state_key == ""
    if room_id is not None:
        pdu["room_id"] = room_id
    elif not (room_version.room_id_from_create_event and is_create):
        raise ValueError("room_id is required for this event")
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.msc2176_redaction_rules:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    legacy_ids = room_version.event_id_format is EventIdFormat.V1
    _check_refs(pdu["prev_events"], legacy_ids)
    _check_refs(pdu["auth_events"], legacy_ids)
    if legacy_ids:
        pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{origin}"

    slow = canonical_json.check(pdu, strict=room_version.strict_canonical_json)
    content_hash = hashlib.sha256(hashing.content_hash_bytes(pdu, needs_slow_path=slow)).digest()
    pdu["hashes"] = {"sha256": unpadded_base64.encode(content_hash)}
    signed = hashing.redacted_signing_bytes(pdu, room_version, needs_slow_path=slow)
    pdu["signatures"] = {origin: {signing_key.key_id: sign_bytes(signed, signing_key)}}
    if legacy_ids:
        event_id = pdu["event_id"]
    else:
        event_id = hashing.event_id_from_reference_hash(
            hashlib.sha256(signed).digest(), room_version
        )
    if unsigned:
        pdu["unsigned"] = dict(unsigned)
    return Event(pdu, room_version, event_id)


def _check_refs(refs: list[Any], legacy_ids: bool) -> None:
    """Catch a caller passing ids where pairs are needed (or the reverse) before signing."""
    for ref in refs:
        if legacy_ids:
            ok = isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)
        else:
            ok = isinstance(ref, str)
        if not ok:
            shape = "[event id, hashes] pairs" if legacy_ids else "event ids"
            raise ValueError(f"prev_events/auth_events must be {shape} in this room version")
