"""Signing JSON objects as a server and checking such signatures (spec appendix "Signing JSON").

A signature covers the canonical JSON of the object without `signatures` and `unsigned`,
and is stored under `signatures.<server>.<key id>`. Events are signed in their redacted
form; that is `builder`'s and `pdu_checks`' business, built on the primitives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from federation import canonical_json, unpadded_base64
from federation.keys import ED25519, InvalidKey, KeyLookup, SigningKey, decode_verify_key
from federation.types import JsonDict

_ED25519_PREFIX = ED25519 + ":"


class SignatureError(ValueError):
    """A required signature is missing, malformed, made with an unknown key, or wrong."""


def signing_bytes(obj: Mapping[str, Any], *, strict: bool = False) -> bytes:
    """The canonical bytes a signature on `obj` covers.

    Non-strict by default: arbitrary signed JSON (key responses, request bodies of legacy
    rooms) may contain floats; events pass their room version's strictness.
    """
    if not isinstance(obj, Mapping):
        raise SignatureError("only JSON objects can be signed")
    unsigned = {key: value for key, value in obj.items() if key not in ("signatures", "unsigned")}
    return canonical_json.encode(unsigned, strict=strict)


def sign_bytes(message: bytes, signing_key: SigningKey) -> str:
    """The unpadded base64 ed25519 signature of `message`."""
    return unpadded_base64.encode(signing_key.key.sign(message).signature)


def sign_json(obj: Mapping[str, Any], server_name: str, signing_key: SigningKey) -> JsonDict:
    """A copy of `obj` with our signature added (other signatures are kept)."""
    signature = sign_bytes(signing_bytes(obj), signing_key)
    signed = dict(obj)
    signed["signatures"] = add_signature(
        obj.get("signatures"), server_name, signing_key.key_id, signature
    )
    return signed


def add_signature(signatures: object, server_name: str, key_id: str, signature: str) -> JsonDict:
    """A new `signatures` object: the old one (if any) plus one signature."""
    merged: JsonDict = {}
    if isinstance(signatures, Mapping):
        merged = {
            server: dict(sigs) for server, sigs in signatures.items() if isinstance(sigs, Mapping)
        }
    merged.setdefault(server_name, {})[key_id] = signature
    return merged


def verify_bytes(message: bytes, signature: object, verify_key: nacl.signing.VerifyKey) -> bool:
    """Whether `signature` (unpadded base64) is a valid ed25519 signature of `message`."""
    if not isinstance(signature, str):
        return False
    try:
        raw = unpadded_base64.decode(signature)
    except ValueError:
        return False
    if len(raw) != nacl.bindings.crypto_sign_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(raw + message, bytes(verify_key))
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def verify_signed_by(
    message: bytes,
    signatures: object,
    server_name: str,
    lookup: KeyLookup,
    *,
    valid_at_ts: int | None = None,
) -> str:
    """Check that `server_name` signed `message`; returns the key id that verified.

    `signatures` is the object's `signatures` field. Signatures by keys the lookup does
    not know (or, given `valid_at_ts`, that had expired by then) are ignored; at least one
    must remain, and a signature by a usable key that does not verify is an error: it
    means a forged or altered object, not a key we merely lack.
    """
    server_sigs = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise SignatureError(f"not signed by {server_name}")
    verified: str | None = None
    for key_id, signature in server_sigs.items():
        if not isinstance(key_id, str) or not key_id.startswith(_ED25519_PREFIX):
            continue
        server_key = lookup(server_name, key_id)
        if server_key is None:
            continue
        if valid_at_ts is not None and server_key.valid_until_ts < valid_at_ts:
            continue
        if not verify_bytes(message, signature, server_key.verify_key):
            raise SignatureError(f"bad signature by {server_name} with {key_id}")
        verified = key_id
    if verified is None:
        raise SignatureError(f"no signature by {server_name} with a known, valid key")
    return verified


def verify_json(
    obj: Mapping[str, Any],
    server_name: str,
    lookup: KeyLookup,
    *,
    valid_at_ts: int | None = None,
) -> str:
    """Check that `server_name` signed the JSON object `obj`; returns the key id used."""
    return verify_signed_by(
        signing_bytes(obj), obj.get("signatures"), server_name, lookup, valid_at_ts=valid_at_ts
    )


def verify_ed25519_signed(
    obj: Mapping[str, Any], entity: str, key_id: str, public_key: str
) -> bool:
    """Whether `obj` carries a valid signature by `entity` (a user or server) under
    `key_id`, made with the ed25519 key whose unpadded base64 form is `public_key`.

    This is how device keys, one-time keys and cross-signing keys are checked: the key
    comes from the signed material itself or from what the entity published before.
    """
    signatures = obj.get("signatures")
    entity_sigs = signatures.get(entity) if isinstance(signatures, Mapping) else None
    if not isinstance(entity_sigs, Mapping):
        return False
    try:
        verify_key = decode_verify_key(public_key)
        message = signing_bytes(obj)
    except (InvalidKey, ValueError):
        return False
    return verify_bytes(message, entity_sigs.get(key_id), verify_key)
