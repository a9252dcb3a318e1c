"""Listener lists: how a service tells others of a change it made, without knowing them.

The producer owns the list and exposes `add_listener`; the composition root subscribes
the consumers (federation EDUs, application services) once, at start-up. Listeners are
awaited one after the other, in the order they subscribed; an exception propagates to
the producer's caller, as it would from a direct call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Listeners(Generic[P]):
    def __init__(self) -> None:
        self._listeners: list[Callable[P, Awaitable[None]]] = []

    def add(self, listener: Callable[P, Awaitable[None]]) -> None:
        self._listeners.append(listener)

    async def notify(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in list(self._listeners):
            await listener(*args, **kwargs)
