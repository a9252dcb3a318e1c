"""Read replicas: streaming standbys of the primary (`database.replicas`) that take
read-only queries which tolerate them.

A read goes to a replica only when the replica has replayed at least the stream
position the client has seen (the position in its token); otherwise, or when no
replica is healthy, to the primary. Which positions a replica has replayed is learnt
twice a second: the primary is sampled for its safe stream positions together with
its WAL position (read after the positions' snapshot, so every transaction the
positions cover committed below it), and each replica for the WAL position it has
replayed; a replica holds the positions of the newest sample its replay has passed.
A replica that does not answer, or that is not replaying (not a standby), is out of
rotation until it does; one that lags, or whose replay is paused, keeps serving only
the reads its replayed positions cover.

Reads with no position of the client's (the public room list, the user directory)
may be a little stale, not much: they go to a replica that has replayed a primary
sample at most `RECENT_S` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from homeserver.storage.core import streams
from homeserver.storage.core.pool import Database, Pool

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.5
CHECK_TIMEOUT_S = 2.0
# Primary samples kept: a replica lagging further than this many checks matches none.
SAMPLES = 120
# How stale a read with no client position may be.
RECENT_S = 2.0


@dataclass(eq=False)
class Replica:
    conninfo: str
    pool: Pool
    healthy: bool = False
    # the primary's safe positions this replica has replayed
    positions: dict[str, int] = field(default_factory=dict)
    # when (monotonic) the primary was at those positions
    replayed_at: float = 0.0
    reads: int = 0


async def primary_sample(conn: AsyncConnection) -> tuple[dict[str, int], int]:
    """The primary's safe stream positions, and a WAL position past all they cover."""
    positions = await streams.safe_positions(conn)
    cur = await conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    row = await cur.fetchone()
    assert row is not None
    return positions, int(row[0])


async def replayed(conn: AsyncConnection) -> int | None:
    """The WAL position a standby has replayed (None: not a standby)."""
    cur = await conn.execute("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


class Replicas:
    """Chooses where a read goes. Without replicas configured, always the primary."""

    def __init__(self, primary: Database, conninfos: tuple[str, ...], size: int) -> None:
        self.primary = primary
        self.replicas = [Replica(c, Pool(c, size)) for c in conninfos]
        self._samples: deque[tuple[int, dict[str, int], float]] = deque(maxlen=SAMPLES)
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    async def start(self) -> None:
        if not self.replicas:
            return
        for replica in self.replicas:
            # Not waiting: a replica down at start joins when it answers.
            await replica.pool.open(wait=False)
        self._task = asyncio.create_task(self._watch(), name="read replicas")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            await replica.pool.close()

    def pool_for(self, stream: str, position: int) -> Pool:
        """A pool whose database has everything up to `position` of `stream`."""
        return self._choose(
            [r for r in self.replicas if r.healthy and r.positions.get(stream, -1) >= position]
        )

    def pool_for_recent(self) -> Pool:
        """A pool at most RECENT_S behind the primary, for reads with no position."""
        oldest = time.monotonic() - RECENT_S
        return self._choose([r for r in self.replicas if r.healthy and r.replayed_at >= oldest])

    def _choose(self, ready: list[Replica]) -> Pool:
        if not ready:
            return self.primary.pool
        self._turn += 1
        replica = ready[self._turn % len(ready)]
        replica.reads += 1
        return replica.pool

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # the primary away: replicas keep their positions
                log.debug("read replicas: cannot sample the primary: %s", exc)
            await asyncio.sleep(CHECK_INTERVAL_S)

    async def check(self) -> None:
        """Sample the primary, then learn what each replica has replayed."""
        sampled = time.monotonic()
        async with self.primary.pool.connection() as conn:
            positions, lsn = await primary_sample(conn)
        self._samples.append((lsn, positions, sampled))
        for replica in self.replicas:
            await self._check_one(replica)

    async def _check_one(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                async with replica.pool.connection() as conn:
                    at = await replayed(conn)
        except Exception as exc:  # any failure takes it out of rotation
            if replica.healthy:
                log.warning("read replica %s out of rotation: %s", replica.conninfo, exc)
            replica.healthy = False
            return
        covered = [(p, t) for lsn, p, t in self._samples if at is not None and lsn <= at]
        replica.positions, replica.replayed_at = covered[-1] if covered else ({}, 0.0)
        if not replica.healthy and at is not None:
            log.info("read replica %s in rotation", replica.conninfo)
        replica.healthy = at is not None
