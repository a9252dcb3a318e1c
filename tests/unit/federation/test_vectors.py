"""Every verified vector from the spec (copied into vectors.json) reproduces exactly."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from federation import canonical_json, hashing, identifiers, keys, signing, unpadded_base64
from federation.redaction import redact
from federation.room_versions import KNOWN_ROOM_VERSIONS, RedactionAlgorithm
from tests.unit.federation.conftest import KeyRing, load_vectors

VECTORS = load_vectors()


def _of(category: str) -> list[Any]:
    found = [v for v in VECTORS["vectors"] if v["category"] == category]
    assert found, category
    return [pytest.param(v, id=v["id"]) for v in found]


def test_only_verified_vectors_were_copied() -> None:
    assert all(v["verified"] is True for v in VECTORS["vectors"])
    assert len(VECTORS["vectors"]) == 26


@pytest.mark.parametrize("vector", _of("unpadded_base64"))
def test_unpadded_base64(vector: dict[str, Any]) -> None:
    raw = vector["input"]["utf8_string"].encode()
    expected = vector["expected_output"]["unpadded_base64"]
    assert unpadded_base64.encode(raw) == expected
    assert unpadded_base64.decode(expected) == raw


@pytest.mark.parametrize("vector", _of("canonical_json"))
def test_canonical_json(vector: dict[str, Any]) -> None:
    value = canonical_json.loads(vector["input"]["json_text"])
    encoded = canonical_json.encode(value)
    assert encoded == vector["expected_output"]["canonical_json_utf8"].encode("utf-8")
    assert encoded.hex() == vector["expected_output"]["canonical_json_utf8_hex"]


def test_signing_key_vector(spec_key: keys.SigningKey) -> None:
    derived = VECTORS["signing_key"]["derived_not_in_spec"]["verify_key_base64"]
    assert keys.encode_verify_key(spec_key.verify_key) == derived
    assert spec_key.key_id == VECTORS["signing_key"]["key_id"]


@pytest.mark.parametrize("vector", _of("json_signing"))
def test_json_signing(vector: dict[str, Any], spec_key: keys.SigningKey, ring: KeyRing) -> None:
    signed = signing.sign_json(vector["input"]["object"], "domain", spec_key)
    assert signed == vector["expected_output"]["signed_object"]
    ring.add("domain", spec_key)
    assert signing.verify_json(signed, "domain", ring) == "ed25519:1"


_V1_TO_V10 = [v for v in KNOWN_ROOM_VERSIONS.values() if v.redaction is not RedactionAlgorithm.V11]


@pytest.mark.parametrize("vector", _of("event_signing"))
def test_event_signing(vector: dict[str, Any], spec_key: keys.SigningKey, ring: KeyRing) -> None:
    unsigned_event = dict(vector["input"]["event"])
    expected = vector["expected_output"]["signed_event"]
    expected_hash = vector["expected_output"]["content_hash_sha256_base64"]
    ring.add("domain", spec_key)
    for room_version in _V1_TO_V10:
        # The content hash does not depend on the room version.
        assert hashing.compute_content_hash(unsigned_event, room_version) == expected_hash
        with_hash = {**unsigned_event, "hashes": {"sha256": expected_hash}}
        message = hashing.redacted_signing_bytes(with_hash, room_version)
        signature = signing.sign_bytes(message, spec_key)
        assert expected["signatures"] == {"domain": {"ed25519:1": signature}}
        rebuilt = {**with_hash, "signatures": expected["signatures"]}
        assert rebuilt == expected
        signing.verify_signed_by(message, expected["signatures"], "domain", ring)
        # The redacted event verifies as plain signed JSON too (what signedjson checks).
        signing.verify_json(redact(expected, room_version), "domain", ring)


def test_event_signing_vector_differs_under_v11_rules(spec_key: keys.SigningKey) -> None:
    """The README's caveat: v11 redaction strips `origin`, so the signature changes."""
    vector = next(v for v in VECTORS["vectors"] if v["id"] == "event-signing/1")
    expected = vector["expected_output"]["signed_event"]
    message = hashing.redacted_signing_bytes(expected, KNOWN_ROOM_VERSIONS["11"])
    assert signing.sign_bytes(message, spec_key) != expected["signatures"]["domain"]["ed25519:1"]


def test_event_signing_derived_event_id() -> None:
    vector = next(v for v in VECTORS["vectors"] if v["id"] == "event-signing/1")
    expected_id = vector["derived_not_in_spec"]["event_id_if_room_v4_to_v10"]
    for number in ("4", "5", "6", "7", "8", "9", "10"):
        event = vector["expected_output"]["signed_event"]
        assert hashing.compute_event_id(event, KNOWN_ROOM_VERSIONS[number]) == expected_id


@pytest.mark.parametrize("vector", _of("identity_lookup_sha256"))
def test_identity_lookup_hash(vector: dict[str, Any]) -> None:
    digest = hashlib.sha256(vector["input"]["string"].encode()).digest()
    expected = vector["expected_output"]["sha256_urlsafe_unpadded_base64"]
    assert unpadded_base64.encode(digest, urlsafe=True) == expected
    assert unpadded_base64.decode(expected, urlsafe=True) == digest


def test_valid_server_names() -> None:
    vector = next(v for v in VECTORS["vectors"] if v["id"] == "grammar/server-names-valid")
    for name in vector["input"]["server_names"]:
        assert identifiers.is_valid_server_name(name), name


def test_valid_room_version_ids() -> None:
    vector = next(v for v in VECTORS["vectors"] if v["id"] == "grammar/room-versions-valid")
    for identifier in vector["input"]["room_versions"]:
        assert identifiers.is_valid_room_version_id(identifier), identifier
