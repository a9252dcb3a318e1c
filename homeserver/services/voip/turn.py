"""TURN credentials for calls (`GET /voip/turnServer`).

With a shared secret, credentials follow coturn's "REST API" scheme: the username is
`<expiry in unix seconds>:<user id>` and the password the base64 HMAC-SHA1 of the
username under the secret, so coturn checks them without asking us and refuses them
once expired. Without one, a fixed username and password are handed out as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError


def rest_api_credentials(secret: str, user_id: str, expiry_s: int) -> tuple[str, str]:
    """(username, password) coturn accepts until `expiry_s` (unix seconds)."""
    username = f"{expiry_s}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass(frozen=True)
class TurnService:
    uris: tuple[str, ...]
    shared_secret: str | None
    username: str | None
    password: str | None
    lifetime_ms: int
    allow_guests: bool

    def credentials(self, requester: Requester) -> dict[str, Any]:
        """The spec's answer; an empty object when no TURN server is configured."""
        if requester.is_guest and not self.allow_guests:
            raise ServiceError(403, "M_FORBIDDEN", "Guests may not use the TURN server")
        if not self.uris:
            return {}
        if self.shared_secret:
            expiry_s = (now_ms() + self.lifetime_ms) // 1000
            username, password = rest_api_credentials(
                self.shared_secret, requester.user_id, expiry_s
            )
            ttl_s = self.lifetime_ms // 1000
        elif self.username is not None and self.password is not None:
            username, password = self.username, self.password
            ttl_s = 86400  # fixed credentials do not expire; clients ask again daily
        else:
            return {}
        return {"username": username, "password": password, "uris": list(self.uris), "ttl": ttl_s}
