"""The connection pool every storage module borrows from, and the database driver's
vocabulary the layers above need.

Services hold connections (to pass them on to storage functions) and catch database
failures, but only storage knows the driver is psycopg: the names below are what they
use instead, so the driver stays behind this layer.
"""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

# A connection, borrowed from the pool or dedicated, handed to storage functions.
Connection = AsyncConnection
# Any failure reported by the database driver.
DatabaseError = psycopg.Error
# The connection failed or was lost: its session state (locks, LISTEN) is gone.
OperationalError = psycopg.OperationalError
# A value the database cannot hold (e.g. a string with a NUL character).
DataError = psycopg.DataError
# An insert collided with a unique constraint.
UniqueViolation = psycopg.errors.UniqueViolation


async def connect(conninfo: str) -> Connection:
    """A dedicated autocommit connection outside the pool, for session state that must
    outlive one borrow (advisory locks, LISTEN) or must not wait on a busy pool."""
    return await AsyncConnection.connect(conninfo, autocommit=True)


def is_conninfo(value: str) -> bool:
    """A postgresql:// URL, or a libpq "key=value" string."""
    if value.startswith(("postgresql://", "postgres://")):
        return True
    if "=" not in value:
        return False
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return False
    return True


class Database:
    """A psycopg 3 async pool; storage functions take connections from it."""

    def __init__(self, conninfo: str, size: int = 10) -> None:
        self.conninfo = conninfo
        self.pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
            conninfo,
            min_size=min(2, size),
            max_size=size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 1},
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


class DatabaseUnreachable(Exception):
    """The configured database does not accept our connection."""


def check_connection(conninfo: str, timeout: int = 10) -> None:
    """Fail early, with one line, when the database cannot be reached."""
    try:
        with psycopg.connect(conninfo, connect_timeout=timeout):
            pass
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        raise DatabaseUnreachable(lines[-1] if lines else type(exc).__name__) from None
