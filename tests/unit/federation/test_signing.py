"""Signing and verifying JSON as a server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import keys, signing
from federation.signing import SignatureError
from tests.unit.federation.conftest import KeyRing

SERVER = "example.org"
_KEY = keys.generate_signing_key("k1")


def _ring(valid_until_ts: int = 2**53 - 1) -> KeyRing:
    ring = KeyRing()
    ring.add(SERVER, _KEY, valid_until_ts)
    return ring


@given(
    st.dictionaries(
        st.text().filter(lambda k: k not in ("signatures", "unsigned")),
        st.integers(-(2**53) + 1, 2**53 - 1) | st.text() | st.booleans(),
    )
)
def test_round_trip(obj: dict[str, Any]) -> None:
    signed = signing.sign_json(obj, SERVER, _KEY)
    assert signing.verify_json(signed, SERVER, _ring()) == "ed25519:k1"
    assert "signatures" not in obj  # input untouched


def test_unsigned_and_other_signatures_are_ignored() -> None:
    signed = signing.sign_json({"a": 1, "unsigned": {"age": 1}}, SERVER, _KEY)
    signed["unsigned"] = {"age": 99}
    other = keys.generate_signing_key("o")
    both = signing.sign_json(signed, "other.org", other)
    assert set(both["signatures"]) == {SERVER, "other.org"}
    assert signing.verify_json(both, SERVER, _ring()) == "ed25519:k1"


def test_tampering_is_detected() -> None:
    signed = signing.sign_json({"a": 1}, SERVER, _KEY)
    signed["a"] = 2
    with pytest.raises(SignatureError, match="bad signature"):
        signing.verify_json(signed, SERVER, _ring())


def test_wrong_server_or_unknown_key() -> None:
    signed = signing.sign_json({"a": 1}, SERVER, _KEY)
    with pytest.raises(SignatureError, match="not signed"):
        signing.verify_json(signed, "other.org", _ring())
    with pytest.raises(SignatureError, match="known, valid key"):
        signing.verify_json(signed, SERVER, KeyRing())


def test_key_validity() -> None:
    signed = signing.sign_json({"a": 1}, SERVER, _KEY)
    ring = _ring(valid_until_ts=1000)
    assert signing.verify_json(signed, SERVER, ring, valid_at_ts=1000)
    with pytest.raises(SignatureError):
        signing.verify_json(signed, SERVER, ring, valid_at_ts=1001)
    assert signing.verify_json(signed, SERVER, ring)  # validity not asked for


def test_signature_by_other_key_of_same_server_is_rejected() -> None:
    impostor = keys.generate_signing_key("k1")  # same key id, different key
    signed = signing.sign_json({"a": 1}, SERVER, impostor)
    with pytest.raises(SignatureError):
        signing.verify_json(signed, SERVER, _ring())


@pytest.mark.parametrize(
    "signatures",
    [
        None,
        "x",
        [],
        {SERVER: "x"},
        {SERVER: {}},
        {SERVER: {"ed25519:k1": 5}},
        {SERVER: {"ed25519:k1": "not base64!"}},
        {SERVER: {"ed25519:k1": "AAAA"}},
        {SERVER: {"ed25519:k1": "A" * 86}},
    ],
)
def test_malformed_signatures(signatures: object) -> None:
    with pytest.raises(SignatureError):
        signing.verify_json({"a": 1, "signatures": signatures}, SERVER, _ring())


def test_non_ed25519_key_ids_are_ignored() -> None:
    signed = signing.sign_json({"a": 1}, SERVER, _KEY)
    signed["signatures"][SERVER]["curve25519:x"] = "whatever"
    assert signing.verify_json(signed, SERVER, _ring()) == "ed25519:k1"


def test_verify_bytes_hostile_values() -> None:
    message = b"hello"
    good = signing.sign_bytes(message, _KEY)
    assert signing.verify_bytes(message, good, _KEY.verify_key)
    assert signing.verify_bytes(message, good + "==", _KEY.verify_key)  # padded is fine
    for bad in (None, 1, "", good[:-2], "é" * 86):
        assert not signing.verify_bytes(message, bad, _KEY.verify_key)


def test_only_objects_are_signed() -> None:
    with pytest.raises(SignatureError):
        signing.signing_bytes([1, 2])  # type: ignore[arg-type]
