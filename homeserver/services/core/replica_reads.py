"""Reads with no position of the reader's that tolerate a replica a little behind
(`Replicas.pool_for_recent`), as long as a refusal there is not final: a replica that
has not replayed what was asked for answers 404 (or 403), and the primary decides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from homeserver.services.core.errors import ServiceError
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.core.replicas import Replicas

T = TypeVar("T")


async def read_recent(
    db: Database, replicas: Replicas, read: Callable[[Connection], Awaitable[T]]
) -> T:
    """`read` on a recent replica, again on the primary when the replica refuses."""
    source = replicas.pool_for_recent()
    if source is not db.pool:
        try:
            async with source.connection() as conn:
                return await read(conn)
        except ServiceError as exc:
            if exc.status not in (403, 404):
                raise
    async with db.pool.connection() as conn:
        return await read(conn)
