"""Reads with no position of the reader's that tolerate a replica a little behind
(`Replicas.pool_for_recent`), as long as a refusal there is not final: a replica that
has not replayed what was asked for answers 404 (or 403), or an answer the caller
does not take as settled (`settled`), and the primary decides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from homeserver.services.core.errors import ServiceError
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.core.replicas import Replicas

T = TypeVar("T")


async def read_recent(
    db: Database,
    replicas: Replicas,
    read: Callable[[Connection], Awaitable[T]],
    settled: Callable[[T], bool] | None = None,
) -> T:
    """`read` on a recent replica, again on the primary when the replica refuses or
    its answer is not `settled` (such as "not found", which may only mean "not yet")."""
    source = replicas.pool_for_recent()
    if source is not db.pool:
        try:
            async with source.connection() as conn:
                answer = await read(conn)
            if settled is None or settled(answer):
                return answer
        except ServiceError as exc:
            if exc.status not in (403, 404):
                raise
    async with db.pool.connection() as conn:
        return await read(conn)
