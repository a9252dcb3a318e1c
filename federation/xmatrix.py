"""X-Matrix request authentication (spec: server-server "Request Authentication").

Every federation request carries `Authorization: X-Matrix origin=...,destination=...,
key="ed25519:...",sig="..."`, a signature by the origin over the method, URI, both server
names and the JSON body. The header comes from anyone on the internet, so parsing accepts
what real servers send (quoted or bare values, any case of names) and turns everything
else into `XMatrixError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federation.identifiers import is_valid_server_name
from federation.keys import ED25519, KeyLookup, SigningKey, parse_key_id
from federation.signing import sign_bytes, signing_bytes, verify_bytes

SCHEME = "X-Matrix"
MAX_HEADER_LENGTH = 4096
_NAME_END = frozenset(' \t,"=')
_VALUE_END = frozenset(' \t,"')  # no "=": a bare value may be padded base64


class XMatrixError(ValueError):
    """The Authorization header is missing, malformed, or does not authenticate."""


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """The parameters of an X-Matrix header."""

    origin: str
    destination: str | None  # optional for compatibility with old servers
    key_id: str
    signature: str


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The JSON object a request signature covers; `content` is None for no body."""
    signed: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        signed["content"] = content
    return signed


def sign_request(
    method: str,
    uri: str,
    origin: str,
    destination: str,
    signing_key: SigningKey,
    content: Any = None,
) -> str:
    """The Authorization header value for a request; `uri` is the path plus query string."""
    message = signing_bytes(request_json(method, uri, origin, destination, content))
    signature = sign_bytes(message, signing_key)
    return (
        f'{SCHEME} origin="{origin}",destination="{destination}",'
        f'key="{signing_key.key_id}",sig="{signature}"'
    )


def parse_authorization(header: object) -> XMatrixAuth:
    """Parse an X-Matrix Authorization header value; raises XMatrixError."""
    if not isinstance(header, str):
        raise XMatrixError("Authorization header must be text")
    if len(header) > MAX_HEADER_LENGTH:
        raise XMatrixError("Authorization header is too long")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise XMatrixError("Authorization scheme is not X-Matrix")
    params = _parse_params(rest)

    origin = params.get("origin")
    key_id = params.get("key")
    signature = params.get("sig")
    destination = params.get("destination")
    if origin is None or key_id is None or signature is None:
        raise XMatrixError("X-Matrix header needs origin, key and sig")
    if not is_valid_server_name(origin):
        raise XMatrixError(f"bad origin {origin!r}")
    if destination is not None and not is_valid_server_name(destination):
        raise XMatrixError(f"bad destination {destination!r}")
    try:
        algorithm, _ = parse_key_id(key_id)
    except ValueError:
        raise XMatrixError(f"bad key id {key_id!r}") from None
    if algorithm != ED25519:
        raise XMatrixError(f"unsupported key algorithm {algorithm!r}")
    return XMatrixAuth(origin, destination, key_id, signature)


def verify_request(
    header: object,
    *,
    method: str,
    uri: str,
    content: Any,
    our_server_name: str,
    lookup: KeyLookup,
    now_ms: int,
) -> XMatrixAuth:
    """Authenticate a request; returns the parsed header (its `origin` is the sender).

    `uri` is the request target as received (path and query, still percent-encoded),
    `content` the parsed JSON body or None. The key must be valid at `now_ms`.
    """
    auth = parse_authorization(header)
    if auth.destination is not None and auth.destination != our_server_name:
        raise XMatrixError(f"request is for {auth.destination}, not for us")
    server_key = lookup(auth.origin, auth.key_id)
    if server_key is None:
        raise XMatrixError(f"unknown key {auth.key_id} of {auth.origin}")
    if server_key.valid_until_ts < now_ms:
        raise XMatrixError(f"key {auth.key_id} of {auth.origin} has expired")
    message = signing_bytes(request_json(method, uri, auth.origin, our_server_name, content))
    if not verify_bytes(message, auth.signature, server_key.verify_key):
        raise XMatrixError("X-Matrix signature does not verify")
    return auth


def _parse_params(text: str) -> dict[str, str]:
    """`name=value` pairs separated by commas; values are tokens or quoted strings."""
    params: dict[str, str] = {}
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t,":
            pos += 1
        if pos == end:
            return params
        start = pos
        while pos < end and text[pos] not in _NAME_END:
            pos += 1
        name = text[start:pos].lower()
        while pos < end and text[pos] in " \t":
            pos += 1
        if not name or pos == end or text[pos] != "=":
            raise XMatrixError("X-Matrix parameters must be name=value")
        pos += 1
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos < end and text[pos] == '"':
            value, pos = _quoted(text, pos + 1)
        else:
            start = pos
            while pos < end and text[pos] not in _VALUE_END:
                pos += 1
            value = text[start:pos]
        if name in params:
            raise XMatrixError(f"X-Matrix parameter {name!r} given twice")
        params[name] = value
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos < end and text[pos] != ",":
            raise XMatrixError("X-Matrix parameters must be separated by commas")


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string body starting at `pos`; returns it unescaped and the next index."""
    chars: list[str] = []
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos == end:
                break
            char = text[pos]
        chars.append(char)
        pos += 1
    raise XMatrixError("unterminated quoted value in X-Matrix header")
