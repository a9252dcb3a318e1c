"""Stream positions for writers, from one dedicated connection per process.

Writers allocate positions outside their own transaction (see storage/core/streams.py);
a dedicated connection makes that possible without borrowing a second pooled
connection while holding one, which could deadlock a busy pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field

from homeserver.storage.core import streams
from homeserver.storage.core.dedicated import DedicatedConnection
from homeserver.storage.core.pool import Connection, Database


async def _allocate(stream: str, count: int, conn: Connection) -> list[int]:
    return await streams.allocate(conn, stream, count)


@dataclass(eq=False)
class _Request:
    stream: str
    count: int
    positions: list[int] = field(default_factory=list)
    served: bool = False
    # False once its caller stopped waiting (cancelled): what it is given is abandoned
    wanted: bool = True


class StreamAllocator:
    """Allocations that arrive while one is in flight wait for it and then go together,
    one statement per stream: writers in many rooms share the round trip (and the
    allocator's transaction) instead of queueing one by one behind it."""

    def __init__(self, db: Database) -> None:
        self._conn = DedicatedConnection(db, configure=streams.prepare_allocator)
        self._lock = asyncio.Lock()
        self._queue: list[_Request] = []

    async def allocate(self, stream: str, count: int = 1) -> list[int]:
        request = _Request(stream, count)
        self._queue.append(request)
        try:
            async with self._lock:
                if not request.served:
                    await self._serve()
        finally:
            if not request.served:
                request.wanted = False
                if request in self._queue:
                    self._queue.remove(request)
        return request.positions

    async def _serve(self) -> None:
        """Allocate for every queued request; on failure they stay queued for their
        own callers to try again (the one that ran this sees the error)."""
        batch = self._queue[:]
        totals: dict[str, int] = {}
        for request in batch:
            totals[request.stream] = totals.get(request.stream, 0) + request.count
        got: dict[str, list[int]] = {}
        try:
            for stream, total in totals.items():
                # Safe to repeat: positions whose allocation did commit on a connection
                # that then died belong to a dead backend and hold nobody back.
                got[stream] = await self._conn.run(functools.partial(_allocate, stream, total))
        except Exception:
            # Positions nobody will use must not hold readers back. If that fails too,
            # the connection is gone, and positions of a dead backend hold nobody back.
            with contextlib.suppress(Exception):
                for stream, positions in got.items():
                    await self.abandon(stream, positions)
            raise
        unwanted: list[_Request] = []
        for request in batch:
            request.positions = got[request.stream][: request.count]
            del got[request.stream][: request.count]
            request.served = True
            if request.wanted:
                self._queue.remove(request)
            else:
                unwanted.append(request)
        for request in unwanted:
            await self.abandon(request.stream, request.positions)

    async def abandon(self, stream: str, positions: list[int]) -> None:
        if not positions:
            return
        await self._conn.run(lambda conn: streams.abandon(conn, stream, positions))

    async def close(self) -> None:
        await self._conn.close()
