"""What an email address and a client secret may be, and the one form an address is
stored and looked up in (so `Alice@Example.org` and `alice@example.org` are one)."""

from __future__ import annotations

import re
from typing import Any

from homeserver.services.core.errors import ServiceError, bad_json, invalid_param

EMAIL = "email"
MAX_ADDRESS_LENGTH = 500
# The spec's grammar of client secrets.
_CLIENT_SECRET = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
_FORBIDDEN_CHARS = re.compile(r"[\s\x00-\x1f\x7f<>()\[\],;:\\\"]")


def canonical_email(value: Any, name: str = "email") -> str:
    """The address in its stored form (local part case-folded, domain in lowercase
    ASCII), or 400 M_INVALID_PARAM (M_BAD_JSON when not a string)."""
    if not isinstance(value, str):
        raise bad_json(f"{name} must be a string")
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(address) > MAX_ADDRESS_LENGTH
        or _FORBIDDEN_CHARS.search(address)
        or "@" in local
        or "." not in domain.strip(".")
    ):
        raise invalid_param(f"{name} is not a valid email address")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid_param(f"{name} has an invalid domain") from None
    return f"{local.casefold()}@{ascii_domain.lower()}"


def client_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ServiceError(
            400,
            "M_MISSING_PARAM" if value is None else "M_BAD_JSON",
            "client_secret must be a string",
        )
    if not _CLIENT_SECRET.fullmatch(value):
        raise invalid_param("client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
    return value
