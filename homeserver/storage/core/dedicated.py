"""Connections of their own, outside the pool, for what lives in a session: stream
allocation with asynchronous commit, advisory locks, LISTEN. Each is opened on first
use and again after the database dropped it (see pool.py for what happens then)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import psycopg
from psycopg import AsyncConnection

from homeserver.storage.core.pool import (
    PROBE_MAX_DELAY_S,
    Database,
    connect,
    is_unavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Configure = Callable[[AsyncConnection], Awaitable[None]]


class DedicatedConnection:
    """One connection used by one caller at a time, in autocommit mode."""

    def __init__(self, db: Database, *, configure: Configure | None = None) -> None:
        self._db = db
        self._configure = configure
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def run(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`operation(conn)`, on a fresh connection if the old one was dropped. It runs
        again once if the connection proves dead while it runs, so it must be safe to
        repeat (one autocommit statement, or session state that died with the old one)."""
        async with self._lock:
            conn = await self._connection()
            try:
                return await operation(conn)
            except psycopg.OperationalError as exc:
                if not is_unavailable(exc):
                    raise
                await self._discard()
            return await operation(await self._connection())

    async def run_once(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T | None:
        """`operation(conn)` on the current connection only; None if there is none or it
        is dead (for undoing session state, which went with the connection)."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                return None
            try:
                return await operation(self._conn)
            except psycopg.OperationalError as exc:
                if not is_unavailable(exc):
                    raise
                await self._discard()
                return None

    async def _connection(self) -> AsyncConnection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._db.pool.check_available()
        try:
            conn = await connect(self._db.conninfo)
        except psycopg.OperationalError as exc:
            if is_unavailable(exc):
                self._db.pool.report_failure()
            raise
        if self._configure is not None:
            try:
                await self._configure(conn)
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        return conn

    async def _discard(self) -> None:
        self._db.pool.report_failure()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


OnNotify = Callable[[str, str], Awaitable[None]]
OnReconnect = Callable[[], Awaitable[None]]


class Listener:
    """LISTENs on `channels` and hands each notification to `on_notify(channel,
    payload)`. When the database drops the connection it reconnects as soon as the
    database is back and calls `on_reconnect()`: whatever was notified meanwhile was
    missed, so the caller must look again."""

    def __init__(
        self,
        db: Database,
        channels: Iterable[str],
        on_notify: OnNotify,
        on_reconnect: OnReconnect,
    ) -> None:
        self._db = db
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (failing loudly if the database is not there) and start listening."""
        conn = await self._connect()
        self._task = asyncio.create_task(self._listen(conn), name="listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _connect(self) -> AsyncConnection:
        conn = await connect(self._db.conninfo)
        try:
            for channel in self._channels:
                await conn.execute(f"LISTEN {channel}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _listen(self, conn: AsyncConnection) -> None:
        while True:
            try:
                async for message in conn.notifies():
                    await self._deliver(message.channel, message.payload)
            except psycopg.OperationalError as exc:
                if not is_unavailable(exc):
                    raise
                log.warning("lost the notification connection (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            self._db.pool.report_failure()
            conn = await self._reconnect()

    async def _deliver(self, channel: str, payload: str) -> None:
        try:
            await self._on_notify(channel, payload)
        except psycopg.Error as exc:
            if not is_unavailable(exc):
                log.exception("handling a notification on %s failed", channel)
                return
            # The database is going away: the lost LISTEN connection's catch-up delivers
            # what this notification could not.
            log.info("a notification on %s waits for the database (%s)", channel, exc)
        except Exception:
            # One bad notification (or a failed read while handling it) must not stop
            # the listening.
            log.exception("handling a notification on %s failed", channel)

    async def _reconnect(self) -> AsyncConnection:
        """Listen again once the database is back, then let the caller catch up (what
        is committed from now on arrives as notifications)."""
        delay = PROBE_MAX_DELAY_S / 8
        while True:
            await self._db.pool.wait_available()
            conn: AsyncConnection | None = None
            try:
                conn = await self._connect()
                await self._on_reconnect()
            except psycopg.OperationalError as exc:
                if not is_unavailable(exc):
                    raise
                if conn is not None:
                    await conn.close()
                self._db.pool.report_failure()
            else:
                log.info("notification connection back")
                return conn
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_DELAY_S)
