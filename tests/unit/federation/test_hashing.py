"""Content hashes, reference hashes and the event id format of each room version."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from federation import canonical_json, hashing, unpadded_base64
from federation.canonical_json import CanonicalJsonError
from federation.redaction import redact
from federation.room_versions import KNOWN_ROOM_VERSIONS

V = KNOWN_ROOM_VERSIONS


def _pdu(**extra: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!r:x",
        "sender": "@u:x",
        "content": {"body": "hello"},
        "depth": 5,
        "origin_server_ts": 10,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "hashes": {"sha256": "ignored"},
        "signatures": {"x": {"ed25519:1": "ignored"}},
        "unsigned": {"age": 3},
        **extra,
    }


def test_content_hash_ignores_unsigned_signatures_hashes() -> None:
    pdu = _pdu()
    expected_input = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(canonical_json.encode(expected_input)).digest()
    assert hashing.compute_content_hash(pdu, V["10"]) == unpadded_base64.encode(digest)
    changed = _pdu(unsigned={"age": 9}, signatures={}, hashes={})
    assert hashing.compute_content_hash(changed, V["10"]) == hashing.compute_content_hash(
        pdu, V["10"]
    )


def test_reference_hash_covers_redacted_event_minus_signatures() -> None:
    pdu = _pdu()
    redacted = redact(pdu, V["10"])
    del redacted["signatures"]
    expected = hashlib.sha256(canonical_json.encode(redacted)).digest()
    assert hashing.compute_reference_hash(pdu, V["10"]) == expected
    # So the id survives redaction and does not depend on signatures or content.
    other = _pdu(content={"body": "other"}, signatures={})
    assert hashing.compute_event_id(other, V["10"]) == hashing.compute_event_id(pdu, V["10"])


def test_event_id_formats() -> None:
    pdu = _pdu()
    digest = hashing.compute_reference_hash(pdu, V["3"])
    assert hashing.compute_event_id(pdu, V["3"]) == "$" + unpadded_base64.encode(digest)
    for number in ("4", "5", "6", "7", "8", "9", "10", "11", "12"):
        digest = hashing.compute_reference_hash(pdu, V[number])
        event_id = hashing.compute_event_id(pdu, V[number])
        assert event_id == "$" + unpadded_base64.encode(digest, urlsafe=True)
        assert re.fullmatch(r"\$[A-Za-z0-9_-]{43}", event_id)


def test_standard_and_urlsafe_ids_differ_when_hash_needs_it() -> None:
    # Find an event whose reference hash contains "+" or "/" in standard base64.
    for depth in range(1, 200):
        pdu = _pdu(depth=depth)
        v3_id = hashing.compute_event_id(pdu, V["3"])
        if "+" in v3_id or "/" in v3_id:
            v4_id = hashing.compute_event_id(pdu, V["4"])
            assert v4_id == v3_id.replace("+", "-").replace("/", "_")
            return
    pytest.fail("no hash with + or / found")


def test_v11_ids_ignore_origin_older_ids_do_not() -> None:
    with_origin = _pdu(origin="x")
    assert hashing.compute_event_id(with_origin, V["11"]) == hashing.compute_event_id(
        _pdu(), V["11"]
    )
    assert hashing.compute_event_id(with_origin, V["10"]) != hashing.compute_event_id(
        _pdu(), V["10"]
    )


@pytest.mark.parametrize("number", ["1", "2"])
def test_v1_v2_take_event_id_field(number: str) -> None:
    event = hashing.event_from_pdu(_pdu(event_id="$abc:x"), V[number])
    assert event.event_id == "$abc:x"
    with pytest.raises(ValueError):
        hashing.compute_event_id(_pdu(), V[number])
    with pytest.raises(ValueError):
        hashing.compute_event_id(_pdu(event_id=5), V[number])


def test_event_from_pdu_v12_create_room_id() -> None:
    create = _pdu(type="m.room.create", state_key="", content={"room_version": "12"})
    del create["room_id"]
    event = hashing.event_from_pdu(create, V["12"])
    assert event.room_id == "!" + event.event_id[1:]


def test_event_reference_for_legacy_rooms() -> None:
    event = hashing.event_from_pdu(_pdu(event_id="$abc:x"), V["1"])
    reference = hashing.event_reference(event)
    digest = hashing.compute_reference_hash(event.pdu, V["1"])
    assert reference == ["$abc:x", {"sha256": unpadded_base64.encode(digest)}]


def test_strictness_follows_room_version() -> None:
    pdu = _pdu(content={"n": 1.5})
    hashing.compute_event_id(pdu, V["5"])
    with pytest.raises(CanonicalJsonError):
        hashing.compute_event_id(pdu, V["6"])
