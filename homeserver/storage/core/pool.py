"""The connection pool every storage module borrows from."""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


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
