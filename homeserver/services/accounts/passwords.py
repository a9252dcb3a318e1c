"""Password hashing with argon2id; verification is constant-time inside argon2."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import secrets
from functools import cache, lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_TIME_COST = 3
# KiB per hash: OWASP's recommended argon2id memory (19 MiB). RFC 9106's 64 MiB held
# the server at four times Synapse's peak in a login storm (bcrypt needs 4 KiB); three
# passes over 19 MiB cost an attacker more than OWASP's minimum of two.
DEFAULT_MEMORY_COST = 19 * 1024


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_cost: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_cost: int) -> str:
    """A hash of a random password with these parameters: checked when the user does
    not exist, so that an unknown user costs as much as a wrong password and names
    cannot be probed."""
    return _hasher(time_cost, memory_cost).hash(secrets.token_urlsafe(16))


def hash_password(
    password: str, time_cost: int = DEFAULT_TIME_COST, memory_cost: int = DEFAULT_MEMORY_COST
) -> str:
    return _hasher(time_cost, memory_cost).hash(password)


def check_password(
    password_hash: str | None,
    password: str,
    time_cost: int = DEFAULT_TIME_COST,
    memory_cost: int = DEFAULT_MEMORY_COST,
) -> bool:
    """Whether `password` matches; a missing hash costs the same time and fails.
    A stored hash is checked with its own parameters, whatever the current ones."""
    checked = password_hash or _dummy_hash(time_cost, memory_cost)
    try:
        return _hasher(time_cost, memory_cost).verify(checked, password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


# One at a time: each hash already runs its 4 lanes on 4 threads, all the cores of a
# small machine, so a second at once adds its memory and little throughput.
DEFAULT_CONCURRENCY = 1
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_FROM = 4 * 1024 * 1024  # below the smallest memory cost allowed (8 MiB)


@cache
def _map_large_allocations() -> None:
    """Have glibc serve every allocation of 4 MiB or more (each hash's memory) by its own
    mapping, unmapped when freed. Left to itself, glibc raises that threshold to the
    size of the last such block freed (up to 32 MiB), after which each executor thread
    keeps a hash's worth of memory in its own arena for good: six threads, six hashes'
    worth. Elsewhere than glibc this does nothing."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
    except (OSError, AttributeError):
        pass


class Passwords:
    """Hashing and checking passwords off the event loop, at most `concurrency` at once.

    Each argon2id hash holds its memory cost while it runs: a storm of logins or
    registrations would otherwise hold that once per thread of the default executor
    (6 on a 2-core machine). Waiting requests queue here, costing nothing; bounding
    how many run is what bounds the peak."""

    def __init__(
        self,
        time_cost: int,
        concurrency: int = DEFAULT_CONCURRENCY,
        memory_cost: int = DEFAULT_MEMORY_COST,
    ) -> None:
        self.time_cost = time_cost  # of new hashes; checks follow each hash's own
        self.memory_cost = memory_cost  # KiB, likewise
        self._slots = asyncio.Semaphore(concurrency)
        _map_large_allocations()

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(
                hash_password, password, self.time_cost, self.memory_cost
            )

    async def check(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(
                check_password, password_hash, password, self.time_cost, self.memory_cost
            )
