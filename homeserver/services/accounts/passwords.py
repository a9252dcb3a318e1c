"""Password hashing with argon2id; verification is constant-time inside argon2."""

from __future__ import annotations

import asyncio
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_TIME_COST = 3
# A hash of a random password: checked when the user does not exist, so that an
# unknown user costs as much time as a wrong password and names cannot be probed.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$"
    "8cAUS5Yb6PR0rYNzX4yXMaCTvbxZPcIL1u3JWmpHXgU"
)


@lru_cache(maxsize=8)
def _hasher(time_cost: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost)


def hash_password(password: str, time_cost: int = DEFAULT_TIME_COST) -> str:
    return _hasher(time_cost).hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash costs the same time and fails."""
    try:
        return _hasher(DEFAULT_TIME_COST).verify(password_hash or _DUMMY_HASH, password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str, time_cost: int = DEFAULT_TIME_COST) -> str:
    """Hashing takes tens of milliseconds of CPU: keep it off the event loop."""
    return await asyncio.to_thread(hash_password, password, time_cost)


async def check_password_async(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(check_password, password_hash, password)
