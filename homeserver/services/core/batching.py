"""Coalescing of many small requests into one: when one commit wakes hundreds of
delivery targets at once (a message to a room with hundreds of servers), each asking the
database for its own lock or queue would cost a round trip per target; a `Coalescer`
gathers the requests made while the previous batch ran (or in the same turn of the event
loop) and answers them all from one call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from homeserver.services.core.tasks import cancel_and_wait

A = TypeVar("A")
R = TypeVar("R")


class Coalescer(Generic[A, R]):
    """`await run(item)` answers `item` from a call of `handle(items)`, which answers each
    of a batch of items, in order. At most one call runs at a time: requests made meanwhile
    make the next batch. A call that fails fails every request of its batch."""

    def __init__(self, handle: Callable[[list[A]], Awaitable[Sequence[R]]], name: str) -> None:
        self._handle = handle
        self._name = name
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, item: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None or self._flusher.done():
            # A task of its own, started after the tasks already ready to run (those a
            # commit just woke), so that their requests join this batch.
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await future

    async def close(self) -> None:
        """Stop: the batch being answered and the requests waiting are cancelled."""
        if self._flusher is not None:
            await cancel_and_wait([self._flusher])
        for _, future in self._waiting:
            future.cancel()
        self._waiting = []

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                answers = await self._handle([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
