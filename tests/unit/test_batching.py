"""The coalescing of requests made together into one call (services/core/batching.py),
which the federation sender relies on to make one round trip for a whole fan-out."""

from __future__ import annotations

import asyncio

import pytest

from homeserver.services.core.batching import Coalescer


async def test_requests_made_together_are_answered_by_one_call_each_with_its_own() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def handle(items: list[int]) -> list[int]:
        calls.append(items)
        await gate.wait()
        return [i * 10 for i in items]

    batches: Coalescer[int, int] = Coalescer(handle, "test")
    first = [asyncio.create_task(batches.run(i)) for i in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Asked while the first call runs: the next call, once it is done.
    later = [asyncio.create_task(batches.run(i)) for i in range(5, 8)]
    await asyncio.sleep(0)
    assert calls == [[0, 1, 2, 3, 4]]
    gate.set()
    assert await asyncio.gather(*first, *later) == [i * 10 for i in range(8)]
    assert calls == [[0, 1, 2, 3, 4], [5, 6, 7]]
    await batches.close()


async def test_a_failed_call_fails_its_batch_and_not_the_next() -> None:
    failing = True

    async def handle(items: list[str]) -> list[str]:
        if failing:
            raise RuntimeError("database away")
        return items

    batches: Coalescer[str, str] = Coalescer(handle, "test")
    asked = [asyncio.create_task(batches.run(s)) for s in "ab"]
    results = await asyncio.gather(*asked, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    failing = False
    assert await batches.run("c") == "c"
    await batches.close()


async def test_close_cancels_the_requests_waiting() -> None:
    async def handle(items: list[int]) -> list[int]:
        await asyncio.sleep(3600)
        return items

    batches: Coalescer[int, int] = Coalescer(handle, "test")
    asked = asyncio.create_task(batches.run(1))
    await asyncio.sleep(0)
    await batches.close()
    with pytest.raises(asyncio.CancelledError):
        await asked
