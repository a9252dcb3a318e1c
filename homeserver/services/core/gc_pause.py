"""Cyclic garbage collection held off while a large answer is built and written.

An initial sync of 1,000 rooms allocates tens of thousands of dicts that all live
until the answer is serialised: every young collection meanwhile scans them only to
promote them, and the full collections they set off walk the whole heap (the event
caches included), about a quarter of that sync's CPU. Reference counting frees them
all once the answer is written, so collecting after, when they are gone, costs
next to nothing.

Pauses nest across concurrent requests (a count of holders); the collector runs
again when the last one lets go. A holder that goes to sleep (a sync long-polling)
lets go meanwhile (`gc_resumed`). Holders overlapping without a break must not
starve the collector: past `MAX_PAUSE_S` of continuous pause, a holder that leaves
collects on its way out.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_PAUSE_S = 30.0


class _Pause:
    holders = 0
    since = 0.0
    disabled = False  # whether we disabled it (it may have been off already)


def _hold() -> None:
    if _Pause.holders == 0:
        _Pause.disabled = gc.isenabled()
        _Pause.since = time.monotonic()
        gc.disable()
    _Pause.holders += 1


def _release() -> None:
    _Pause.holders -= 1
    if _Pause.holders == 0:
        if _Pause.disabled:
            gc.enable()
    elif time.monotonic() - _Pause.since > MAX_PAUSE_S:
        gc.collect()
        _Pause.since = time.monotonic()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (unless pauses overlap for too long)."""
    _hold()
    try:
        yield
    finally:
        _release()


@contextmanager
def gc_resumed() -> Iterator[None]:
    """Inside a `gc_paused` block: let go of the pause for a while (a long wait)."""
    _release()
    try:
        yield
    finally:
        _hold()
