"""Unpadded base64 (spec appendix "Unpadded Base64"): how Matrix writes keys, hashes, sigs.

Standard alphabet for keys, signatures and content hashes; URL-safe for event ids from
room v4 on. Decoding also accepts padded input, since some implementations send it.
"""

from __future__ import annotations

import base64
import binascii

_STANDARD_ONLY = frozenset("+/")
_URLSAFE_ONLY = frozenset("-_")


class InvalidBase64(ValueError):
    """The text is not base64 in the expected alphabet."""


def encode(data: bytes, *, urlsafe: bool = False) -> str:
    """Base64 of `data` without trailing "=" padding."""
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def decode(text: str | bytes, *, urlsafe: bool = False) -> bytes:
    """Decode unpadded (or padded) base64; raises `InvalidBase64` on anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidBase64("base64 must be ASCII") from None
    if not isinstance(text, str):
        raise InvalidBase64(f"expected base64 text, got {type(text).__name__}")
    foreign = _STANDARD_ONLY if urlsafe else _URLSAFE_ONLY
    if not foreign.isdisjoint(text):
        raise InvalidBase64("base64 uses characters of the other alphabet")
    padded = text + "=" * (-len(text) % 4)
    try:
        if urlsafe:
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidBase64(f"invalid base64: {e}") from None
