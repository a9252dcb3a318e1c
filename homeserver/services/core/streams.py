"""Stream positions for writers, from one dedicated connection per process.

Writers allocate positions outside their own transaction (see storage/core/streams.py);
a dedicated connection makes that possible without borrowing a second pooled
connection while holding one, which could deadlock a busy pool.
"""

from __future__ import annotations

from homeserver.storage.core import streams
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Database


class StreamAllocator:
    def __init__(self, db: Database) -> None:
        self._conn = DedicatedConnection(db, configure=streams.prepare_allocator)

    async def allocate(self, stream: str, count: int = 1) -> list[int]:
        # Safe to repeat: positions whose allocation did commit on a connection that
        # then died belong to a dead backend and hold nobody back.
        return await self._conn.run(lambda conn: streams.allocate(conn, stream, count))

    async def abandon(self, stream: str, positions: list[int]) -> None:
        if not positions:
            return
        await self._conn.run(lambda conn: streams.abandon(conn, stream, positions))

    async def close(self) -> None:
        await self._conn.close()
