"""Password hashing with argon2id; verification is constant-time inside argon2."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """Hashing takes tens of milliseconds of CPU: keep it off the event loop."""
    return await asyncio.to_thread(hash_password, password)


async def check_password_async(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(check_password, password_hash, password)
