"""The connection pool every storage module borrows from, the database driver's
vocabulary the layers above need, and what the pool does when the database goes away
(a restart, a failover, a reboot of its host).

Services hold connections (to pass them on to storage functions) and catch database
failures, but only storage knows the driver is psycopg: the names below are what they
use instead, so the driver stays behind this layer.

Every connection dies with the server, but an idle one only says so when it is next
used, and psycopg's pool reconnects with a backoff that reaches tens of seconds. So
the first sign of trouble (a dropped connection, here or on a dedicated connection such
as the notifier's LISTEN) starts a probe: if the database answers, the pool just drops
its dead idle connections; if it does not, the database is marked away, every checkout
fails at once with `DatabaseUnavailable` (the API answers 503 and the client retries),
and as soon as a probe connects again a fresh pool replaces the old one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Self

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from homeserver import metrics

log = logging.getLogger(__name__)

# A connection, borrowed from the pool or dedicated, handed to storage functions.
Connection = AsyncConnection
# Any failure reported by the database driver.
DatabaseError = psycopg.Error
# The connection failed or was lost: its session state (locks, LISTEN) is gone.
OperationalError = psycopg.OperationalError
# A value the database cannot hold (e.g. a string with a NUL character).
DataError = psycopg.DataError
# An insert collided with a unique constraint.
UniqueViolation = psycopg.errors.UniqueViolation

# A checkout waits at most this long for a free connection (a busy pool), and a new
# connection for the server to answer (a host that vanished without a reset).
CHECKOUT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5
# The probe's first pause and its longest: the database is noticed back within half a
# second (a refused connection costs next to nothing).
PROBE_FIRST_DELAY_S = 0.05
PROBE_MAX_DELAY_S = 0.5
# Server-side reasons a connection ended: shut down by an administrator, after a crash
# of another backend, or refused while the server is starting or stopping.
_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P03"})


class DatabaseUnavailable(psycopg.OperationalError):
    """The database cannot be reached now; the same request may succeed shortly.

    An OperationalError, so that code already catching psycopg's errors catches it."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database (or the connection to it) is gone, rather than
    that a statement failed: then a retry soon may well succeed."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, DatabaseUnavailable):
        return True
    # libpq's own failures (could not connect, connection closed, server closed the
    # connection unexpectedly, and the pool's timeouts) carry no SQLSTATE.
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _DISCONNECT_STATES


class TimedCursor(AsyncCursor[Any]):
    """A cursor whose statements are timed into the query-duration histogram."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        start = time.perf_counter()
        try:
            return await super().execute(query, params, **kwargs)
        finally:
            metrics.DB_QUERY.observe(time.perf_counter() - start)


async def _configure(conn: AsyncConnection) -> None:
    """Read jsonb with the parser that read the requests. PostgreSQL keeps a number such
    as 1e30 as an exact numeric; the stdlib would return it as an integer past 64 bits,
    which our JSON encoder (orjson) refuses: every later answer holding it would fail.

    And no JIT compilation: our queries are short, but the planner's row estimates for
    recursive or `unnest` queries run to millions, past `jit_above_cost`, and compiling
    then cost a second where running took 60 ms (the state of 1,000 rooms in an initial
    sync)."""
    set_json_loads(orjson.loads, conn)
    await conn.execute("SET jit = off")


@asynccontextmanager
async def pipelined_transaction(conn: Connection) -> AsyncIterator[None]:
    """A transaction in pipeline mode whose BEGIN and COMMIT go out with the other
    statements. psycopg's `transaction()` inside a pipeline syncs (a round trip) on
    entering and twice on leaving; here the pipeline's own sync at the end is the only
    one, so a transaction costs the round trips its statements need and one more.

    A statement that fails puts the pipeline in its aborted state, in which the server
    skips everything up to the sync, the COMMIT too: nothing of the transaction
    commits, and it is rolled back once the pipeline has synced."""
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")
    except BaseException:
        await roll_back(conn)
        raise


async def roll_back(conn: Connection) -> None:
    """End the connection's transaction, if it is in one, without committing."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            await conn.rollback()
        except psycopg.Error as exc:
            # The pool resets (or discards) a connection that comes back in a
            # transaction or broken; a lost connection (the database restarting)
            # is reported where the failure is handled.
            if not conn.broken:
                log.warning("rolling back a failed transaction failed: %s", exc)


async def connect(conninfo: str) -> Connection:
    """A dedicated autocommit connection outside the pool, for session state that must
    outlive one borrow (advisory locks, LISTEN) or must not wait on a busy pool. Its
    statements are prepared from their second run, as the pool's are (a stream
    allocator's one statement runs for every group of sends)."""
    conn = await AsyncConnection.connect(
        conninfo,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        prepare_threshold=1,
        cursor_factory=TimedCursor,
    )
    await _configure(conn)
    return conn


def is_conninfo(value: str) -> bool:
    """A postgresql:// URL, or a libpq "key=value" string."""
    if value.startswith(("postgresql://", "postgres://")):
        return True
    if "=" not in value:
        return False
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return False
    return True


class _MostRecentFirst(deque[AsyncConnection]):
    """The idle connections, handed out most recently returned first.

    psycopg's pool hands them out in turn, so under light load every request lands on
    a connection that served no request for a while: each of them prepares every
    statement itself and PostgreSQL plans each afresh for its first few executions
    (a sliding-sync answer spent a third more time in the database until every
    connection of the pool had seen it). Reusing the warm one keeps them hot, and
    leaves the others idle for the pool to close. The pool takes a connection with
    `popleft` and returns it with `append` (`test_pool_settings.py` checks that)."""

    def popleft(self) -> AsyncConnection:
        return self.pop()


class Pool:
    """psycopg's pool, failing fast while the database is away and replaced by a fresh
    one when it is back. `connection()` is the only way in."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self._pool = self._new_pool()
        self._available = asyncio.Event()
        self._available.set()
        self._probe: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        metrics.sample(self)

    def metric_samples(self) -> Iterator[metrics.Sample]:
        """The pool's connections (open, idle) and the checkouts waiting for one."""
        stats = self._pool.get_stats()
        doc = "Connections of the database pool: its size, those idle, checkouts waiting"
        for state, key in (
            ("size", "pool_size"),
            ("idle", "pool_available"),
            ("waiting", "requests_waiting"),
        ):
            yield "homeserver_db_pool_connections", doc, ("state",), (state,), stats.get(key, 0)
        yield "homeserver_db_pool_max", "Most connections the pool opens", (), (), self.size

    def can_lend(self) -> bool:
        """Whether a checkout now is served without waiting for another request's
        connection (one is idle, or there is room to open one): callers that borrow
        only to go faster ask first, so they never wait on each other."""
        stats = self._pool.get_stats()
        if stats.get("requests_waiting", 0):
            return False
        return stats.get("pool_available", 0) > 0 or stats.get("pool_size", 0) < self.size

    def _new_pool(self) -> AsyncConnectionPool[AsyncConnection]:
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=min(2, self.size),
            max_size=self.size,
            open=False,
            timeout=CHECKOUT_TIMEOUT_S,
            configure=_configure,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "prepare_threshold": 1,
                "cursor_factory": TimedCursor,
            },
        )
        pool._pool = _MostRecentFirst()
        return pool

    async def open(self, *, wait: bool = True) -> None:
        """Open the pool; with `wait`, once its first connections are made."""
        await self._pool.open(wait=wait, timeout=30)

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await asyncio.gather(*self._retiring)
        await self._pool.close()

    async def wait_available(self) -> None:
        await self._available.wait()

    def check_available(self) -> None:
        if not self._available.is_set():
            raise DatabaseUnavailable("the database is unavailable; try again shortly")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        self.check_available()
        start = time.perf_counter()
        try:
            async with self._pool.connection() as conn:
                metrics.DB_CHECKOUT.observe(time.perf_counter() - start)
                yield conn
        except psycopg.OperationalError as exc:
            if is_unavailable(exc):
                self.report_failure()
            raise

    def report_failure(self) -> None:
        """A connection was found dead: find out whether the database still answers."""
        if self._closed or (self._probe is not None and not self._probe.done()):
            return
        self._probe = asyncio.create_task(self._recover(), name="database probe")

    async def _recover(self) -> None:
        error = await _probe(self.conninfo)
        if error is None:
            # It answers (it restarted before we noticed, or one connection was
            # killed): drop the pool's dead idle connections.
            await self._pool.check()
            return
        away_since = time.monotonic()
        self._available.clear()
        log.warning("the database is unavailable (%s); answering 503 until it is back", error)
        delay = PROBE_FIRST_DELAY_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_DELAY_S)
            if await _probe(self.conninfo) is None and await self._replace_pool():
                log.warning("the database is back after %.1f s", time.monotonic() - away_since)
                return

    async def _replace_pool(self) -> bool:
        """Swap in a new pool (the old one's connections are dead, and its reconnect
        backoff may be long by now); False if it could not connect after all."""
        fresh = self._new_pool()
        try:
            await fresh.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError:
            await fresh.close()
            return False
        old, self._pool = self._pool, fresh
        self._available.set()
        # Connections still checked out of the old pool are closed as they come back.
        retiring = asyncio.create_task(old.close(), name="retired pool")
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        return True


async def _probe(conninfo: str) -> str | None:
    """None if the database accepts a connection and answers, else why not."""
    try:
        conn = await connect(conninfo)
    except psycopg.OperationalError as exc:
        return _one_line(exc)
    try:
        await conn.execute("")
    except psycopg.OperationalError as exc:
        return _one_line(exc)
    finally:
        await conn.close()
    return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


class Database:
    """The pool, and the conninfo for connections of their own (see dedicated.py)."""

    def __init__(self, conninfo: str, size: int = 10) -> None:
        self.conninfo = conninfo
        self.pool = Pool(conninfo, size)

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


class DatabaseUnreachable(Exception):
    """The configured database does not accept our connection."""


def check_connection(conninfo: str, timeout: int = 10) -> None:
    """Fail early, with one line, when the database cannot be reached."""
    try:
        with psycopg.connect(conninfo, connect_timeout=timeout):
            pass
    except psycopg.Error as exc:
        raise DatabaseUnreachable(_one_line(exc)) from None
