"""Concurrent requests for the same work share one run of it: many clients asking for
the same remote file or thumbnail at once cause one fetch, one resize."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """At most one run of the work per key at a time; later callers wait for its result
    (or its exception). A waiter's cancellation does not cancel the shared run."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await work()
            future.set_result(result)
            return result
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone request must not log "never retrieved"
            raise
        finally:
            del self._inflight[key]
            if not future.done():
                future.cancel()
