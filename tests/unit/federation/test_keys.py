"""Signing keys, key ids and the signing key file format."""

from __future__ import annotations

import pytest

from federation import keys, unpadded_base64
from federation.keys import InvalidKey
from tests.unit.federation.conftest import SPEC_SEED


def test_generate_and_key_id() -> None:
    key = keys.generate_signing_key("a_1")
    assert key.key_id == "ed25519:a_1"
    assert len(key.seed) == 32
    assert keys.generate_signing_key().version.startswith("a_")


def test_key_file_round_trip() -> None:
    first, second = keys.generate_signing_key("a_1"), keys.generate_signing_key("b_2")
    text = keys.write_signing_keys([first, second])
    assert text.splitlines()[0] == f"ed25519 a_1 {unpadded_base64.encode(first.seed)}"
    parsed = keys.read_signing_keys("\n" + text + "\n\n")
    assert [(k.version, k.seed) for k in parsed] == [("a_1", first.seed), ("b_2", second.seed)]


def test_reads_synapse_style_line() -> None:
    (key,) = keys.read_signing_keys(f"ed25519 1 {SPEC_SEED}\n")
    assert keys.encode_verify_key(key.verify_key) == "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"


@pytest.mark.parametrize(
    "text",
    [
        "ed25519 a_1",
        f"ed25519 a_1 {SPEC_SEED} extra",
        f"curve25519 a_1 {SPEC_SEED}",
        "ed25519 a_1 not*base64",
        "ed25519 a_1 Zm9v",  # too short for a seed
        f"ed25519 bad:version {SPEC_SEED}",
    ],
)
def test_rejects_bad_key_file_lines(text: str) -> None:
    with pytest.raises(InvalidKey):
        keys.read_signing_keys(text)


def test_verify_key_encoding_round_trip() -> None:
    key = keys.generate_signing_key("x")
    encoded = keys.encode_verify_key(key.verify_key)
    assert keys.decode_verify_key(encoded) == key.verify_key


@pytest.mark.parametrize("encoded", ["", "Zm9v", "!!!!", "A" * 44])
def test_rejects_bad_verify_keys(encoded: str) -> None:
    with pytest.raises(InvalidKey):
        keys.decode_verify_key(encoded)


def test_key_ids() -> None:
    assert keys.make_key_id("abc_1") == "ed25519:abc_1"
    assert keys.parse_key_id("ed25519:abc_1") == ("ed25519", "abc_1")
    for bad in ("ed25519", ":abc", "ed25519:", "ed25519:a b", "ed25519:a:b"):
        with pytest.raises(InvalidKey):
            keys.parse_key_id(bad)
    with pytest.raises(InvalidKey):
        keys.make_key_id("has space")
