"""Shared-secret registration, as Synapse's `/_synapse/admin/v1/register` does it: what
`register_new_matrix_user` and deployment playbooks use to create the first admin.

The caller fetches a nonce, then proves it knows `registration_shared_secret` with an
HMAC-SHA1 over the nonce, the username, the password and the admin flag. A nonce is
good once, for a minute, in the process that issued it (as in Synapse).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from homeserver.services.accounts.accounts import AccountService
from homeserver.services.accounts.login import LoginService
from homeserver.services.admin.users import AdminUserService
from homeserver.services.core.errors import ServiceError, forbidden, invalid_param

NONCE_LIFETIME_S = 60.0
MAX_NONCES = 10_000


def registration_mac(
    secret: str, nonce: str, username: str, password: str, admin: bool, user_type: str | None
) -> str:
    """The hex HMAC-SHA1 the caller sends as `mac` (Synapse's recipe, NUL-separated)."""
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type is not None:
        parts.append(user_type)
    message = "\x00".join(parts).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha1).hexdigest()


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise invalid_param(f"{key} must be a non-empty string")
    if "\x00" in value:
        raise invalid_param(f"{key} may not contain NUL")
    return value


class SharedSecretRegistration:
    """Nonces issued by this process, and the registration they allow."""

    def __init__(
        self,
        secret: str | None,
        accounts: AccountService,
        login: LoginService,
        admin_users: AdminUserService,
    ) -> None:
        self.secret = secret
        self.accounts = accounts
        self.login = login
        self.admin_users = admin_users
        self._nonces: dict[str, float] = {}

    def _enabled(self) -> str:
        if not self.secret:
            raise ServiceError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self.secret

    def new_nonce(self) -> str:
        self._enabled()
        now = time.monotonic()
        if len(self._nonces) >= MAX_NONCES:
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_LIFETIME_S}
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return nonce

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        secret = self._enabled()
        nonce = _string(body, "nonce")
        issued = self._nonces.pop(nonce, None)
        if issued is None or time.monotonic() - issued > NONCE_LIFETIME_S:
            raise invalid_param("unrecognised nonce")
        username = _string(body, "username")
        password = _string(body, "password")
        displayname = _string(body, "displayname", required=False)
        user_type = _string(body, "user_type", required=False)
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise invalid_param("admin must be a boolean")
        mac = _string(body, "mac")
        expected = registration_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(mac, expected):
            raise forbidden("HMAC incorrect")
        if user_type is not None:
            raise invalid_param("This server has no user types")
        user_id = await self.accounts.register_user(username.lower(), password, admin=admin)
        if displayname:
            await self.admin_users.set_display_name(user_id, displayname)
        return await self.login.start_session(user_id, None, None, refreshable=False)
