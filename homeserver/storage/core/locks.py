"""Session-level advisory locks on a connection of their own: such a lock is held until
it is let go or its connection closes, so a process that dies loses its locks with its
connection, and nobody waits on them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from homeserver.storage.core.pool import Connection, OperationalError, connect

T = TypeVar("T")


class LockConnection:
    """One dedicated connection for a process's session locks, opened on first use and
    again after it broke (its locks went with it)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Connection | None = None
        self._guard = asyncio.Lock()

    async def run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """`operation` on the connection, one at a time."""
        async with self._guard:
            if self._conn is None or self._conn.closed:
                self._conn = await connect(self._conninfo)
            try:
                return await operation(self._conn)
            except OperationalError:
                await self._conn.close()
                self._conn = None
                raise

    async def close(self) -> None:
        """Close the connection, letting go of every lock taken on it."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
