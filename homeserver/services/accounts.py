"""Creating and checking accounts."""

from __future__ import annotations

import re
import time

from homeserver.services.passwords import hash_password_async
from homeserver.storage import accounts
from homeserver.storage.pool import Database


class AccountError(Exception):
    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


MAX_PASSWORD_LENGTH = 512
# The user id grammar for new accounts; historical ids allowed more, but not for new ones.
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")


def is_valid_localpart(localpart: str) -> bool:
    return _LOCALPART.fullmatch(localpart) is not None


async def register_user(
    db: Database,
    server_name: str,
    localpart: str,
    password: str | None,
    *,
    admin: bool = False,
) -> str:
    """Create a local account and return its user id."""
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
    password_hash = await hash_password_async(password) if password is not None else None
    async with db.pool.connection() as conn:
        created = await accounts.create_user(
            conn,
            user_id,
            password_hash,
            is_admin=admin,
            is_guest=False,
            now_ms=int(time.time() * 1000),
        )
    if not created:
        raise AccountError("M_USER_IN_USE", f"{user_id} is already taken")
    return user_id
