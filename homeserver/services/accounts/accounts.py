"""Creating and checking accounts."""

from __future__ import annotations

import re

from homeserver.services.accounts.passwords import DEFAULT_TIME_COST, hash_password_async
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.storage.accounts import accounts, devices, profiles, tokens
from homeserver.storage.core.pool import Database
from homeserver.storage.e2ee import keys as e2e_keys
from homeserver.storage.push import pushers


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


async def register_user(
    db: Database,
    server_name: str,
    localpart: str,
    password: str | None,
    *,
    admin: bool = False,
    time_cost: int = DEFAULT_TIME_COST,
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
    password_hash = await hash_password_async(password, time_cost) if password is not None else None
    async with db.pool.connection() as conn:
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


async def change_password(db: Database, user_id: str, new_password: str, time_cost: int) -> None:
    if len(new_password) > MAX_PASSWORD_LENGTH:
        raise AccountError("M_INVALID_PARAM", "Password is too long")
    if not new_password:
        raise AccountError("M_INVALID_PARAM", "Password must not be empty")
    password_hash = await hash_password_async(new_password, time_cost)
    async with db.pool.connection() as conn:
        await accounts.set_password_hash(conn, user_id, password_hash)


async def deactivate(device_lists: DeviceLists, user_id: str, *, erase: bool) -> None:
    """Close the account for good, all at once: no password, no devices (nor their keys),
    no tokens, no pushers; with `erase`, no display name or avatar either. Leaving its
    rooms comes after (services/accounts/deactivation.py)."""
    async with device_lists.transaction([user_id]) as conn:
        await accounts.deactivate_user(conn, user_id, erase=erase)
        await pushers.delete_user_pushers(conn, user_id)
        if erase and await profiles.get_profile(conn, user_id) is not None:
            await profiles.set_profile_field(conn, user_id, "displayname", None)
            await profiles.set_profile_field(conn, user_id, "avatar_url", None)
        await tokens.delete_user_tokens(conn, user_id)
        device_ids = await devices.all_device_ids(conn, user_id)
        await devices.delete_devices(conn, user_id, device_ids)
        await e2e_keys.delete_device_keys(conn, user_id, device_ids)
