"""Server signing keys: ed25519 key pairs, key ids, and the on-disk signing key format.

The key file holds one key per line, "ed25519 <version> <unpadded base64 seed>", the
format Synapse uses, so a deployer can move a server's identity between implementations.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions
import nacl.signing

from federation import unpadded_base64

ED25519 = "ed25519"
_KEY_VERSION = re.compile(r"[A-Za-z0-9_]+")


class InvalidKey(ValueError):
    """A key id, key or key file line is malformed."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """Our own ed25519 signing key together with its version (the part after "ed25519:")."""

    version: str
    key: nacl.signing.SigningKey

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.version}"

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.key.verify_key

    @property
    def seed(self) -> bytes:
        return bytes(self.key)


class ServerKey(NamedTuple):
    """A remote server's verify key and the time (ms) until which it may be used."""

    verify_key: nacl.signing.VerifyKey
    valid_until_ts: int


# (server_name, key_id) -> the key, or None when unknown. Kept synchronous so that
# verification stays pure; callers fetch keys beforehand (see `pdu_checks.signing_servers`).
KeyLookup = Callable[[str, str], ServerKey | None]


def make_key_id(version: str) -> str:
    """`ed25519:<version>`, after checking the version's grammar."""
    _check_version(version)
    return f"{ED25519}:{version}"


def parse_key_id(key_id: str) -> tuple[str, str]:
    """Split `algorithm:version`; raises `InvalidKey` if either part is malformed."""
    algorithm, colon, version = key_id.partition(":") if isinstance(key_id, str) else ("", "", "")
    if not colon or not algorithm:
        raise InvalidKey(f"bad key id {key_id!r}")
    _check_version(version)
    return algorithm, version


def generate_signing_key(version: str | None = None) -> SigningKey:
    """A fresh key; the default version is random so rotated keys never collide."""
    version = version if version is not None else "a_" + secrets.token_hex(2)
    _check_version(version)
    return SigningKey(version, nacl.signing.SigningKey.generate())


def signing_key_from_seed(seed: bytes | str, version: str) -> SigningKey:
    """A key from its 32-byte seed (raw, or unpadded base64 as in the key file)."""
    _check_version(version)
    raw = unpadded_base64.decode(seed) if isinstance(seed, str) else seed
    if len(raw) != nacl.bindings.crypto_sign_SEEDBYTES:
        raise InvalidKey(f"an ed25519 seed has 32 bytes, not {len(raw)}")
    return SigningKey(version, nacl.signing.SigningKey(raw))


def read_signing_keys(text: str) -> list[SigningKey]:
    """Parse a signing key file; blank lines are skipped."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] != ED25519:
            raise InvalidKey(f"line {number}: expected 'ed25519 <version> <seed>'")
        try:
            keys.append(signing_key_from_seed(fields[2], fields[1]))
        except ValueError as e:
            raise InvalidKey(f"line {number}: {e}") from None
    return keys


def write_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The key file text for `keys`, one line each."""
    return "".join(f"{ED25519} {k.version} {unpadded_base64.encode(k.seed)}\n" for k in keys)


def encode_verify_key(verify_key: nacl.signing.VerifyKey) -> str:
    """Unpadded base64 of the public key, as published in `/_matrix/key/v2/server`."""
    return unpadded_base64.encode(bytes(verify_key))


def decode_verify_key(encoded: str) -> nacl.signing.VerifyKey:
    """The public key from its unpadded base64 form; raises `InvalidKey`."""
    try:
        raw = unpadded_base64.decode(encoded)
        return nacl.signing.VerifyKey(raw)
    except (ValueError, TypeError, nacl.exceptions.CryptoError) as e:
        raise InvalidKey(f"bad ed25519 verify key: {e}") from None


def _check_version(version: object) -> None:
    if not isinstance(version, str) or not _KEY_VERSION.fullmatch(version):
        raise InvalidKey(f"bad key version {version!r}")
