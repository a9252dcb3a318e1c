"""The registration tokens admins hand out, when registration needs one (checked at
registration by services/accounts/registration.py)."""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from homeserver.services.accounts.accounts import storable
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, not_found
from homeserver.storage.accounts import registration_tokens
from homeserver.storage.core.pool import Database

MAX_TOKEN_LENGTH = 64
DEFAULT_TOKEN_LENGTH = 16
_TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
_TOKEN = re.compile(r"[A-Za-z0-9._~\-]{1,64}")


def render_token(row: registration_tokens.RegistrationTokenRow) -> dict[str, Any]:
    return {
        "token": row.token,
        "uses_allowed": row.uses_allowed,
        "pending": row.pending,
        "completed": row.completed,
        "expiry_time": row.expiry_time,
    }


def _check_uses(uses_allowed: Any) -> int | None:
    if uses_allowed is None:
        return None
    if isinstance(uses_allowed, bool) or not isinstance(uses_allowed, int) or uses_allowed < 0:
        raise ServiceError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer")
    return uses_allowed


def _check_expiry(expiry_time: Any) -> int | None:
    if expiry_time is None:
        return None
    if isinstance(expiry_time, bool) or not isinstance(expiry_time, int):
        raise ServiceError(400, "M_INVALID_PARAM", "expiry_time must be an integer")
    if expiry_time < now_ms():
        raise ServiceError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
    return expiry_time


class RegistrationTokens:
    """The registration tokens admins hand out, when registration needs one."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_token(
        self,
        token: Any = None,
        uses_allowed: Any = None,
        expiry_time: Any = None,
        length: Any = DEFAULT_TOKEN_LENGTH,
    ) -> dict[str, Any]:
        """Create a token (random when none is given); the admin API's token object."""
        uses = _check_uses(uses_allowed)
        expiry = _check_expiry(expiry_time)
        if token is not None:
            if not isinstance(token, str) or not _TOKEN.fullmatch(token):
                raise ServiceError(
                    400,
                    "M_INVALID_PARAM",
                    "token must be 1 to 64 characters from A-Z a-z 0-9 . _ ~ -",
                )
            async with self.db.pool.connection() as conn:
                row = await registration_tokens.create_token(conn, token, uses, expiry)
            if row is None:
                raise ServiceError(400, "M_INVALID_PARAM", "Token already in use")
            return render_token(row)
        if (
            isinstance(length, bool)
            or not isinstance(length, int)
            or not 1 <= length <= MAX_TOKEN_LENGTH
        ):
            raise ServiceError(400, "M_INVALID_PARAM", "length must be an integer from 1 to 64")
        for _ in range(10):
            candidate = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(length))
            async with self.db.pool.connection() as conn:
                row = await registration_tokens.create_token(conn, candidate, uses, expiry)
            if row is not None:
                return render_token(row)
        raise ServiceError(500, "M_UNKNOWN", "Could not generate an unused token")

    async def list_tokens(self, valid: bool | None = None) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            rows = await registration_tokens.list_tokens(conn, valid, now_ms())
        return [render_token(row) for row in rows]

    async def get_token(self, token: str) -> dict[str, Any]:
        storable(token, "token")
        async with self.db.pool.connection() as conn:
            row = await registration_tokens.get_token(conn, token)
        if row is None:
            raise not_found("No such registration token")
        return render_token(row)

    async def update_token(self, token: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change uses_allowed and/or expiry_time (null removes the limit)."""
        storable(token, "token")
        uses = _check_uses(changes.get("uses_allowed"))
        expiry = _check_expiry(changes.get("expiry_time"))
        async with self.db.pool.connection() as conn:
            row = await registration_tokens.update_token(
                conn,
                token,
                set_uses_allowed="uses_allowed" in changes,
                uses_allowed=uses,
                set_expiry_time="expiry_time" in changes,
                expiry_time=expiry,
            )
        if row is None:
            raise not_found("No such registration token")
        return render_token(row)

    async def delete_token(self, token: str) -> None:
        storable(token, "token")
        async with self.db.pool.connection() as conn:
            if not await registration_tokens.delete_token(conn, token):
                raise not_found("No such registration token")
