"""Checks on a PDU received over federation, before any auth rule runs (spec: server-server
"Checks performed on receipt of a PDU", steps 1 to 3).

Order matters and follows the spec: a malformed event or a bad signature rejects the
event; a failed content hash only redacts it. The redacted canonical bytes are encoded
once and serve both the reference hash (event id) and every signature check, since
signature verification dominates the cost of receiving an event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from federation import canonical_json, hashing, unpadded_base64
from federation.events import AUTHORISING_USER, CREATE, MEMBER, Event
from federation.identifiers import server_name_of
from federation.keys import KeyLookup
from federation.redaction import redact
from federation.room_versions import EventIdFormat, RoomVersion
from federation.signing import verify_signed_by
from federation.types import JsonDict

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255  # type, state_key, sender, room_id, event_id
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH_LEGACY = 2**63 - 1
MAX_DEPTH = 2**53 - 1  # room v6+: canonical JSON range


class InvalidPdu(ValueError):
    """The PDU is malformed: wrong field types, over a size limit, or not canonical JSON."""


@dataclass(frozen=True, slots=True)
class CheckedPdu:
    """A PDU that passed format and signature checks.

    When its content hash did not match, `redacted` is True and `event.pdu` is the
    redacted form, which is what the spec says to process from then on.
    """

    event: Event
    redacted: bool


def check_pdu(pdu: object, room_version: RoomVersion, lookup: KeyLookup) -> CheckedPdu:
    """Format, signature and content hash checks; raises InvalidPdu or SignatureError.

    `lookup` must know the keys of every server in `signing_servers(pdu, room_version)`.
    """
    slow = check_format(pdu, room_version)
    assert isinstance(pdu, dict)
    signed = hashing.redacted_signing_bytes(pdu, room_version, needs_slow_path=slow)
    if room_version.event_id_format is EventIdFormat.V1:
        event_id = pdu["event_id"]
    else:
        reference_hash = hashlib.sha256(signed).digest()
        event_id = hashing.event_id_from_reference_hash(reference_hash, room_version)

    valid_at = pdu["origin_server_ts"] if room_version.enforce_key_validity else None
    for server in signing_servers(pdu, room_version):
        verify_signed_by(signed, pdu["signatures"], server, lookup, valid_at_ts=valid_at)

    actual = hashlib.sha256(hashing.content_hash_bytes(pdu, needs_slow_path=slow)).digest()
    if actual == _claimed_content_hash(pdu):
        return CheckedPdu(Event(pdu, room_version, event_id), redacted=False)
    return CheckedPdu(Event(redact(pdu, room_version), room_version, event_id), redacted=True)


def _claimed_content_hash(pdu: JsonDict) -> bytes | None:
    try:
        return unpadded_base64.decode(pdu["hashes"]["sha256"])
    except ValueError:
        return None


def signing_servers(pdu: JsonDict, room_version: RoomVersion) -> set[str]:
    """The servers whose signatures the PDU must carry.

    Always the sender's server; in rooms v1/v2 also the server that minted the event id;
    for a restricted join, also the server of the user who authorised it.
    Expects a PDU that passed `check_format`.
    """
    servers = {_server_or_invalid(pdu.get("sender"), "@", "sender")}
    if room_version.event_id_format is EventIdFormat.V1:
        servers.add(_server_or_invalid(pdu.get("event_id"), "$", "event_id"))
    if room_version.restricted_join and pdu.get("type") == MEMBER:
        content = pdu.get("content")
        if (
            isinstance(content, dict)
            and content.get("membership") == "join"
            and AUTHORISING_USER in content
        ):
            servers.add(_server_or_invalid(content[AUTHORISING_USER], "@", AUTHORISING_USER))
    return servers


def check_format(pdu: object, room_version: RoomVersion) -> bool:
    """Raise InvalidPdu unless the PDU has the shape and sizes its room version requires.

    Returns `canonical_json.check`'s verdict (whether the slow encoder is needed), so
    callers can encode parts of the PDU without validating it again.
    """
    if not isinstance(pdu, dict):
        raise InvalidPdu("a PDU must be a JSON object")
    try:
        slow = canonical_json.check(pdu, strict=room_version.strict_canonical_json)
        size = len(canonical_json.encode_checked(pdu, needs_slow_path=slow))
    except canonical_json.CanonicalJsonError as e:
        raise InvalidPdu(str(e)) from None
    if size > MAX_PDU_BYTES:
        raise InvalidPdu(f"PDU is {size} bytes, over the {MAX_PDU_BYTES} byte limit")

    event_type = _field(pdu, "type", str)
    _field(pdu, "sender", str)
    _field(pdu, "origin_server_ts", int)
    _field(pdu, "content", dict)
    hashes = _field(pdu, "hashes", dict)
    if not isinstance(hashes.get("sha256"), str):
        raise InvalidPdu("hashes.sha256 must be a string")
    _check_signatures(_field(pdu, "signatures", dict))
    _field(pdu, "unsigned", dict, required=False)
    state_key = _field(pdu, "state_key", str, required=False)

    depth = _field(pdu, "depth", int)
    max_depth = MAX_DEPTH if room_version.strict_canonical_json else MAX_DEPTH_LEGACY
    if not 0 <= depth <= max_depth:
        raise InvalidPdu(f"depth {depth} is out of range")

    is_v12_create = (
        room_version.room_id_from_create_event and event_type == CREATE and state_key == ""
    )
    _field(pdu, "room_id", str, required=not is_v12_create)
    uses_event_id_field = room_version.event_id_format is EventIdFormat.V1
    _field(pdu, "event_id", str, required=uses_event_id_field)
    if not room_version.msc2176_redaction_rules:
        _field(pdu, "redacts", str, required=False)

    for key in ("type", "state_key", "sender", "room_id", "event_id"):
        value = pdu.get(key)
        if isinstance(value, str) and len(value.encode("utf-8")) > MAX_ID_BYTES:
            raise InvalidPdu(f"{key} is longer than {MAX_ID_BYTES} bytes")

    _check_refs(pdu, "prev_events", MAX_PREV_EVENTS, uses_event_id_field)
    _check_refs(pdu, "auth_events", MAX_AUTH_EVENTS, uses_event_id_field)
    signing_servers(pdu, room_version)  # the ids whose servers must sign are well-formed
    return slow


def _field(pdu: JsonDict, key: str, kind: type, *, required: bool = True) -> Any:
    if key not in pdu:
        if required:
            raise InvalidPdu(f"{key} is missing")
        return None
    value = pdu[key]
    # bool is an int subclass but never a valid depth or timestamp.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidPdu(f"{key} must be a {_JSON_NAMES[kind]}")
    return value


_JSON_NAMES = {str: "string", int: "integer", dict: "object", list: "array"}


def _check_signatures(signatures: JsonDict) -> None:
    for server, sigs in signatures.items():
        if not isinstance(sigs, dict) or not all(isinstance(s, str) for s in sigs.values()):
            raise InvalidPdu(f"signatures of {server} must be an object of strings")


def _check_refs(pdu: JsonDict, key: str, limit: int, with_hashes: bool) -> None:
    refs = _field(pdu, key, list)
    if len(refs) > limit:
        raise InvalidPdu(f"{key} has {len(refs)} entries, more than {limit}")
    for ref in refs:
        if with_hashes:
            ok = (
                isinstance(ref, list)
                and len(ref) == 2
                and isinstance(ref[0], str)
                and isinstance(ref[1], dict)
                and isinstance(ref[1].get("sha256"), str)
            )
        else:
            ok = isinstance(ref, str)
        if not ok:
            shape = "[event id, {sha256: hash}] pairs" if with_hashes else "event ids"
            raise InvalidPdu(f"{key} must be a list of {shape}")


def _server_or_invalid(identifier: object, sigil: str, what: str) -> str:
    server = server_name_of(identifier, sigil)
    if server is None:
        raise InvalidPdu(f"{what} {identifier!r} has no valid server name")
    return server
