"""OpenID tokens: a user asks for one and hands it to a third party (a widget, an
integration manager, Element Call's LiveKit token service), which asks our federation
API who it belongs to. The token proves identity only: it opens nothing else."""

from __future__ import annotations

from typing import Any

from homeserver.services.accounts.account_data import check_owner
from homeserver.services.accounts.auth import Requester, hash_token, new_token
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.storage.accounts import openid
from homeserver.storage.core.pool import Database

# As Synapse: an hour, long enough for a widget to start, short enough to be harmless.
TOKEN_LIFETIME_MS = 60 * 60 * 1000


class OpenIdService:
    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self.server_name = server_name

    async def request_token(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """A new token for the requester's own account, in the spec's response shape."""
        check_owner(requester, user_id, "OpenID tokens")
        token = new_token("syo")
        now = now_ms()
        async with self.db.pool.connection() as conn:
            await openid.insert_token(
                conn, hash_token(token), user_id, now + TOKEN_LIFETIME_MS, now
            )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": TOKEN_LIFETIME_MS // 1000,
        }

    async def userinfo(self, token: str) -> dict[str, str]:
        """Whom a token was issued to: `{"sub": user_id}`; unknown or expired: 401."""
        async with self.db.pool.connection() as conn:
            user_id = await openid.token_user(conn, hash_token(token), now_ms())
        if user_id is None:
            raise ServiceError(401, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token")
        return {"sub": user_id}
