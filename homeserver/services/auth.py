"""Who is making a request: access token to requester."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from homeserver.storage import tokens
from homeserver.storage.pool import Database


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str
    token_id: int
    is_admin: bool
    is_guest: bool


class AuthFailure(Exception):
    """The token is unknown, expired or belongs to a deactivated account."""

    def __init__(self, message: str, *, soft_logout: bool = False) -> None:
        super().__init__(message)
        self.soft_logout = soft_logout


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token(prefix: str) -> str:
    """An opaque token; the prefix only helps people tell token kinds apart in logs."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def now_ms() -> int:
    return int(time.time() * 1000)


async def authenticate(db: Database, token: str) -> Requester:
    async with db.pool.connection() as conn:
        row = await tokens.lookup_access_token(conn, hash_token(token))
    if row is None or row.deactivated:
        raise AuthFailure("Unknown access token")
    if row.expires_ts is not None and row.expires_ts <= now_ms():
        # An expired token that could be refreshed: the client should refresh, not log out.
        raise AuthFailure("Access token has expired", soft_logout=True)
    if row.refresh_token_id is not None and not row.used:
        async with db.pool.connection() as conn:
            await tokens.mark_access_token_used(conn, row.token_id, row.refresh_token_id)
    return Requester(
        user_id=row.user_id,
        device_id=row.device_id,
        token_id=row.token_id,
        is_admin=row.is_admin,
        is_guest=row.is_guest,
    )
