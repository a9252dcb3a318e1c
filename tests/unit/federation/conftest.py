"""Shared fixtures: the spec's test signing key and a key lookup over a few keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from federation import keys

VECTORS_PATH = Path(__file__).with_name("vectors.json")
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
FAR_FUTURE = 2**53 - 1


def load_vectors() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


class KeyRing:
    """A dict-backed `KeyLookup` for tests."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], keys.ServerKey] = {}

    def add(self, server: str, key: keys.SigningKey, valid_until_ts: int = FAR_FUTURE) -> None:
        self.keys[(server, key.key_id)] = keys.ServerKey(key.verify_key, valid_until_ts)

    def __call__(self, server: str, key_id: str) -> keys.ServerKey | None:
        return self.keys.get((server, key_id))


@pytest.fixture
def spec_key() -> keys.SigningKey:
    return keys.signing_key_from_seed(SPEC_SEED, "1")


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing()
