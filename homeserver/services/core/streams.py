"""Stream positions for writers, from one dedicated connection per process.

Writers allocate positions outside their own transaction (see storage/core/streams.py);
a dedicated connection makes that possible without borrowing a second pooled
connection while holding one, which could deadlock a busy pool.
"""

from __future__ import annotations

import asyncio

from homeserver.storage.core import streams
from homeserver.storage.core.pool import Connection, connect


class StreamAllocator:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.conninfo)
            await streams.use_asynchronous_commit(self._conn)
        return self._conn

    async def allocate(self, stream: str, count: int = 1) -> list[int]:
        async with self._lock:
            return await streams.allocate(await self._connection(), stream, count)

    async def abandon(self, stream: str, positions: list[int]) -> None:
        if not positions:
            return
        async with self._lock:
            await streams.abandon(await self._connection(), stream, positions)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
