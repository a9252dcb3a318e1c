"""Token-bucket rate limiting of expensive or abusable actions (login, registration,
messages, room creation, invites, joins), per user or per client address.

Buckets live in this process's memory: with N worker processes a client gets up
to N times the configured rate, which is acceptable for flood protection and
keeps every check off the database.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from homeserver.config import RATE_LIMIT_DEFAULTS, Config
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import ServiceError

# Past this many buckets, full ones are dropped: they hold no information.
SWEEP_THRESHOLD = 10_000


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
        *,
        enabled: bool = True,
        exempt_appservices: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(limits)
        self.enabled = enabled
        # Application services registered with `rate_limited: false` (bridges, mostly).
        self.exempt_appservices = exempt_appservices
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}

    @classmethod
    def from_config(
        cls, config: Config, exempt_appservices: frozenset[str] = frozenset()
    ) -> RateLimiter:
        """The configured limits of every action (`rate_limits.*`)."""
        limits = {action: Limit(*config.rate_limit(action)) for action in RATE_LIMIT_DEFAULTS}
        return cls(
            limits, enabled=config.rate_limits_enabled, exempt_appservices=exempt_appservices
        )

    async def check(self, action: str, key: str, requester: Requester | None = None) -> None:
        """Count one `action` by `key`, or raise RateLimited; server admins are exempt.

        Async so that callers need not change if buckets ever move to shared storage.
        """
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
        now = self._clock()
        bucket = self._buckets.get((action, key))
        if bucket is None:
            if len(self._buckets) >= SWEEP_THRESHOLD:
                self._sweep(now)
            bucket = self._buckets[(action, key)] = Bucket(float(limit.burst), now)
        wait = bucket.take(limit, now)
        if wait > 0:
            raise RateLimited(action, max(1, math.ceil(wait * 1000)))

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled: a new bucket starts full anyway."""
        for bucket_key, bucket in list(self._buckets.items()):
            bucket.refill(self.limits[bucket_key[0]], now)
            if bucket.tokens >= self.limits[bucket_key[0]].burst:
                del self._buckets[bucket_key]

    def __len__(self) -> int:
        return len(self._buckets)
