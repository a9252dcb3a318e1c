"""Token-bucket rate limiting of expensive or abusable actions (login, registration,
messages, room creation, invites, joins), per user or per client address.

The buckets of a server live in PostgreSQL (`DatabaseBuckets`), shared by every process
on the database: behind a load balancer a client flooding through three processes is
limited exactly as through one. Dividing each process's budget by the number of
processes was the alternative, without a database round trip, but it is only right
when the balancer spreads one client's requests evenly, and it needs every process to
know how many are alive. The cost is one statement per limited request, on an unlogged
table (no write-ahead log) whose rows are one per active user and action.
`MemoryBuckets` holds the same arithmetic in one process's memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from homeserver.config import RATE_LIMIT_DEFAULTS, Config
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.storage.core import ratelimit as store
from homeserver.storage.core.pool import Database

# Past this many buckets, full ones are dropped: they hold no information.
SWEEP_THRESHOLD = 10_000
# How often the shared buckets that have refilled are deleted.
FORGET_INTERVAL_MS = 600_000


@dataclass(frozen=True, slots=True)
class Limit:
    per_second: float
    burst: int


@dataclass(slots=True)
class Bucket:
    """Tokens available at `updated` (seconds on the limiter's clock)."""

    tokens: float
    updated: float

    def refill(self, limit: Limit, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(limit.burst), self.tokens + elapsed * limit.per_second)
        self.updated = now

    def take(self, limit: Limit, now: float) -> float:
        """Spend one token if there is one and return 0, else the seconds until there is."""
        self.refill(limit, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / limit.per_second


class Buckets(Protocol):
    async def take(self, action: str, key: str, limit: Limit) -> float:
        """Spend a token of (action, key): 0, or the seconds until one is there."""
        ...


class MemoryBuckets:
    """One process's buckets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[Bucket, Limit]] = {}

    async def take(self, action: str, key: str, limit: Limit) -> float:
        now = self._clock()
        found = self._buckets.get((action, key))
        if found is None:
            if len(self._buckets) >= SWEEP_THRESHOLD:
                self._sweep(now)
            found = self._buckets[(action, key)] = (Bucket(float(limit.burst), now), limit)
        return found[0].take(limit, now)

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled: a new bucket starts full anyway."""
        for bucket_key, (bucket, limit) in list(self._buckets.items()):
            bucket.refill(limit, now)
            if bucket.tokens >= limit.burst:
                del self._buckets[bucket_key]

    def __len__(self) -> int:
        return len(self._buckets)


class DatabaseBuckets:
    """The buckets of every process on the database. Time is this process's clock:
    the processes of a cluster keep their clocks in step (NTP), and a clock behind the
    others only ever adds no tokens (time never runs backwards for a bucket)."""

    def __init__(self, db: Database, longest_refill_ms: int) -> None:
        self.db = db
        self._longest_refill_ms = longest_refill_ms
        self._forgotten_at = now_ms()

    async def take(self, action: str, key: str, limit: Limit) -> float:
        now = now_ms()
        async with self.db.pool.connection() as conn:
            allowed, tokens = await store.take(
                conn, action, key, limit.per_second, limit.burst, now
            )
            if now - self._forgotten_at > FORGET_INTERVAL_MS:
                self._forgotten_at = now
                await store.forget_full(conn, now - self._longest_refill_ms)
        return 0.0 if allowed else (1.0 - tokens) / limit.per_second


class RateLimited(ServiceError):
    """The action was refused: 429 M_LIMIT_EXCEEDED, try again after `retry_after_ms`."""

    def __init__(self, action: str, retry_after_ms: int) -> None:
        super().__init__(
            429, "M_LIMIT_EXCEEDED", f"Too many {action} requests", retry_after_ms=retry_after_ms
        )
        self.retry_after_ms = retry_after_ms


class RateLimiter:
    """One bucket per (action, key); a key is a user id or a client address."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        buckets: Buckets,
        *,
        enabled: bool = True,
        exempt_appservices: frozenset[str] = frozenset(),
    ) -> None:
        self.limits = dict(limits)
        self.buckets = buckets
        self.enabled = enabled
        # Application services registered with `rate_limited: false` (bridges, mostly).
        self.exempt_appservices = exempt_appservices

    @classmethod
    def from_config(
        cls, config: Config, db: Database, exempt_appservices: frozenset[str] = frozenset()
    ) -> RateLimiter:
        """The configured limits of every action (`rate_limits.*`), in shared buckets."""
        limits = {action: Limit(*config.rate_limit(action)) for action in RATE_LIMIT_DEFAULTS}
        longest_refill_s = max(limit.burst / limit.per_second for limit in limits.values())
        return cls(
            limits,
            DatabaseBuckets(db, math.ceil(longest_refill_s * 1000)),
            enabled=config.rate_limits_enabled,
            exempt_appservices=exempt_appservices,
        )

    async def check(self, action: str, key: str, requester: Requester | None = None) -> None:
        """Count one `action` by `key`, or raise RateLimited; server admins are exempt."""
        if not self.enabled or (
            requester is not None
            and (requester.is_admin or requester.appservice_id in self.exempt_appservices)
        ):
            return
        limit = self.limits[action]
        if requester is not None and requester.ratelimit is not None:
            # An admin's override_ratelimit for this user; 0 lifts every limit.
            per_second, burst = requester.ratelimit
            if per_second <= 0 or burst <= 0:
                return
            limit = Limit(per_second, burst)
        wait = await self.buckets.take(action, key, limit)
        if wait > 0:
            raise RateLimited(action, max(1, math.ceil(wait * 1000)))
