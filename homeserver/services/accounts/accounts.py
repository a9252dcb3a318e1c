"""Creating and checking accounts."""

from __future__ import annotations

import re

from homeserver.services.accounts.passwords import Passwords
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.storage.accounts import accounts
from homeserver.storage.core.pool import Database


class AccountError(ServiceError):
    """The account cannot be created or changed as asked (bad or taken name, bad password)."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(400, errcode, message)


MAX_PASSWORD_LENGTH = 512
# The user id grammar for new accounts; historical ids allowed more, but not for new ones.
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")


def storable(value: str, name: str) -> str:
    """`value`, if PostgreSQL text can hold it (no NUL characters); else 400."""
    if "\x00" in value:
        raise AccountError("M_INVALID_PARAM", f"{name} must not contain NUL characters")
    return value


def is_valid_localpart(localpart: str) -> bool:
    return _LOCALPART.fullmatch(localpart) is not None


class AccountService:
    """Accounts of this server: creating them and changing their passwords (closing them
    is services/accounts/deactivation.py's)."""

    def __init__(self, db: Database, server_name: str, passwords: Passwords) -> None:
        self.db = db
        self.server_name = server_name
        self.passwords = passwords

    async def register_user(
        self, localpart: str, password: str | None, *, admin: bool = False
    ) -> str:
        """Create a local account and return its user id."""
        server_name = self.server_name
        if localpart.startswith("@"):
            localpart, _, server = localpart[1:].partition(":")
            if server and server != server_name:
                raise AccountError("M_INVALID_USERNAME", f"Not a user id of {server_name}")
        if not is_valid_localpart(localpart):
            raise AccountError(
                "M_INVALID_USERNAME",
                "User ids may contain only lowercase letters, digits and ._=-/+",
            )
        user_id = f"@{localpart}:{server_name}"
        if len(user_id.encode()) > 255:
            raise AccountError("M_INVALID_USERNAME", "User id is too long")
        if password is not None and len(password) > MAX_PASSWORD_LENGTH:
            raise AccountError("M_INVALID_PARAM", "Password is too long")
        password_hash = await self.passwords.hash(password) if password is not None else None
        async with self.db.pool.connection() as conn:
            created = await accounts.create_user(
                conn,
                user_id,
                password_hash,
                is_admin=admin,
                is_guest=False,
                now_ms=now_ms(),
            )
        if not created:
            raise AccountError("M_USER_IN_USE", f"{user_id} is already taken")
        return user_id

    async def change_password(self, user_id: str, new_password: str) -> None:
        if len(new_password) > MAX_PASSWORD_LENGTH:
            raise AccountError("M_INVALID_PARAM", "Password is too long")
        if not new_password:
            raise AccountError("M_INVALID_PARAM", "Password must not be empty")
        password_hash = await self.passwords.hash(new_password)
        async with self.db.pool.connection() as conn:
            await accounts.set_password_hash(conn, user_id, password_hash)
