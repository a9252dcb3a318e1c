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


DEFAULT_CONCURRENCY = 2


class Passwords:
    """Hashing and checking passwords off the event loop, at most `concurrency` at once.

    Each argon2id hash holds 64 MiB while it runs (its memory cost): a storm of logins
    or registrations would otherwise hold that once per thread of the default executor
    (6 on a 2-core machine: about 400 MiB). Waiting requests queue here, costing
    nothing; argon2 returns the memory to the system after each hash (it is one mapping
    above glibc's mmap threshold), so bounding how many run is what bounds the peak."""

    def __init__(self, time_cost: int, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.time_cost = time_cost  # of new hashes; checks follow each hash's own
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(hash_password, password, self.time_cost)

    async def check(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(check_password, password_hash, password)
