"""From a provider's claims to a Matrix account: Synapse's Jinja templates (`{{
user.preferred_username }}`) for the subject, localpart and display name, rendered
in a sandbox, and the localpart escaping Synapse applies, so an operator's
templates give the same user ids here as there."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeserver.config.oidc import OidcProviderConfig

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

MAX_DISPLAY_NAME = 256
_NOT_LOCALPART = re.compile(rb"[^a-z0-9._=/+-]")


def _localpart_from_email(address: Any) -> str:
    return str(address).rsplit("@", 1)[0] if address else ""


@functools.cache
def _environment() -> SandboxedEnvironment:
    """The sandbox, made on first use: jinja2 is loaded only by servers whose users
    log in through a provider."""
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(autoescape=False)
    env.filters["localpart_from_email"] = _localpart_from_email
    return env


class MappingError(Exception):
    """The claims do not give what the configuration asks of them."""


def escape_localpart(name: str) -> str:
    """Synapse's map_username_to_mxid_localpart: lowercase, and every character a
    user id may not hold as `=xx` (its UTF-8 bytes in hex)."""
    raw = name.lower().encode()
    escaped = _NOT_LOCALPART.sub(lambda m: b"=%02x" % m.group()[0], raw)
    return re.sub(rb"^_", b"=5f", escaped).decode("ascii")


def _render(source: str | None, claims: dict[str, Any]) -> str | None:
    from jinja2 import TemplateError

    if source is None:
        return None
    try:
        rendered = _environment().from_string(source).render(user=claims).strip()
    except TemplateError as exc:
        raise MappingError(f"template failed: {exc}") from None
    return rendered or None


@dataclass(frozen=True)
class MappedUser:
    subject: str
    localpart: str | None  # None: the user must pick one
    display_name: str | None


def map_claims(config: OidcProviderConfig, claims: dict[str, Any]) -> MappedUser:
    mapping = config.mapping
    if mapping.subject_template is not None:
        subject = _render(mapping.subject_template, claims)
    else:
        found = claims.get(mapping.subject_claim)
        subject = str(found) if isinstance(found, str | int) and found != "" else None
    if subject is None:
        raise MappingError(f"the provider sent no {mapping.subject_claim!r} claim")
    localpart = _render(mapping.localpart_template, claims)
    display_name = _render(mapping.display_name_template, claims)
    return MappedUser(
        subject=subject.replace("\x00", ""),
        localpart=escape_localpart(localpart) if localpart else None,
        # As a profile allows: no NUL, at most 256 characters.
        display_name=display_name.replace("\x00", "")[:MAX_DISPLAY_NAME] if display_name else None,
    )
