"""Token-bucket arithmetic, admin exemption, the switch-off, and their configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.cli import _flag_values, build_parser
from homeserver.config import RATE_LIMIT_DEFAULTS, ConfigError, load_config
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.ratelimit import (
    SWEEP_THRESHOLD,
    Bucket,
    Limit,
    MemoryBuckets,
    RateLimited,
    RateLimiter,
)
from homeserver.storage.core.pool import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(per_second: float = 0.5, burst: int = 3, **kwargs: bool) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    buckets = MemoryBuckets(clock)
    return RateLimiter({"message": Limit(per_second, burst)}, buckets, **kwargs), clock


def _count(limiter: RateLimiter) -> int:
    assert isinstance(limiter.buckets, MemoryBuckets)
    return len(limiter.buckets)


def _requester(*, admin: bool = False) -> Requester:
    return Requester(user_id="@a:x", device_id="D", token_id=1, is_admin=admin, is_guest=False)


def test_bucket_math() -> None:
    limit = Limit(per_second=2.0, burst=3)
    bucket = Bucket(tokens=3.0, updated=0.0)
    assert [bucket.take(limit, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(limit, 0.0) == pytest.approx(0.5)  # one token takes 1/2 s
    assert bucket.take(limit, 0.25) == pytest.approx(0.25)
    assert bucket.take(limit, 0.5) == 0.0
    # Refill stops at the burst size, however long the wait.
    bucket.refill(limit, 100.0)
    assert bucket.tokens == 3.0
    # A clock going backwards never adds tokens.
    bucket.refill(limit, 50.0)
    assert bucket.tokens == 3.0


async def test_burst_then_sustained_rate() -> None:
    limiter, clock = _limiter(per_second=0.5, burst=3)
    for _ in range(3):
        await limiter.check("message", "@a:x")
    with pytest.raises(RateLimited) as info:
        await limiter.check("message", "@a:x")
    assert info.value.retry_after_ms == 2000
    assert (info.value.status, info.value.errcode) == (429, "M_LIMIT_EXCEEDED")
    assert info.value.extra == {"retry_after_ms": 2000}
    clock.now += 1.5
    with pytest.raises(RateLimited) as info:
        await limiter.check("message", "@a:x")
    assert info.value.retry_after_ms == 500
    clock.now += 0.5
    await limiter.check("message", "@a:x")
    # Refused attempts do not spend tokens.
    with pytest.raises(RateLimited):
        await limiter.check("message", "@a:x")


async def test_keys_are_independent() -> None:
    limiter, _ = _limiter(burst=1)
    await limiter.check("message", "@a:x")
    await limiter.check("message", "@b:x")
    await limiter.check("message", "127.0.0.1")
    with pytest.raises(RateLimited):
        await limiter.check("message", "@a:x")


async def test_admins_are_exempt_and_users_are_not() -> None:
    limiter, _ = _limiter(burst=1)
    for _ in range(10):
        await limiter.check("message", "@a:x", _requester(admin=True))
    await limiter.check("message", "@a:x", _requester())
    with pytest.raises(RateLimited):
        await limiter.check("message", "@a:x", _requester())


async def test_disabled_limiter_allows_everything() -> None:
    limiter, _ = _limiter(burst=1, enabled=False)
    for _ in range(10):
        await limiter.check("message", "@a:x")
    assert _count(limiter) == 0


async def test_full_buckets_are_swept() -> None:
    limiter, clock = _limiter(per_second=1.0, burst=2)
    for n in range(SWEEP_THRESHOLD):
        await limiter.check("message", f"k{n}")
    assert _count(limiter) == SWEEP_THRESHOLD
    await limiter.check("message", "busy")
    await limiter.check("message", "busy")
    clock.now += 0.5  # the `k` buckets refill to 1.5 of 2; not full, so kept
    await limiter.check("message", "new1")
    assert _count(limiter) == SWEEP_THRESHOLD + 2
    clock.now += 1.0  # `k` and new1 (1 + 1) are full now; busy (0 + 1.5) is not
    await limiter.check("message", "new2")
    assert _count(limiter) == 2  # busy and new2
    # The kept bucket still remembers what was spent.
    await limiter.check("message", "busy")
    with pytest.raises(RateLimited):
        await limiter.check("message", "busy")


def test_configuration(tmp_path: Path) -> None:
    config = load_config(tmp_path, {}, {}, {})
    assert config.rate_limits_enabled
    assert {action: config.rate_limit(action) for action in RATE_LIMIT_DEFAULTS} == (
        RATE_LIMIT_DEFAULTS
    )
    config = load_config(
        tmp_path,
        {"rate_limits.login.per_second": 2, "rate_limits.login.burst": 7},
        {"HOMESERVER_RATE_LIMITS_JOIN_PER_SECOND": "0.25"},
        {},
    )
    assert config.rate_limit("login") == (2.0, 7)
    assert config.rate_limit("join") == (0.25, 10)
    limiter = RateLimiter.from_config(config, Database("postgresql://unused"))
    assert limiter.limits["login"] == Limit(2.0, 7) and limiter.enabled


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"rate_limits.message.per_second": 0}, "must be a positive number"),
        ({"rate_limits.message.per_second": "fast"}, "must be float"),
        ({"rate_limits.message.per_second": True}, "must be float"),
        ({"rate_limits.message.per_second": "nan"}, "must be a positive number"),
        ({"rate_limits.invite.burst": 0}, "must be at least 1"),
    ],
)
def test_bad_configuration(tmp_path: Path, values: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path, values, {}, {})


@pytest.mark.parametrize(
    ("flags", "enabled"),
    [
        ([], None),
        (["--no-rate-limits"], False),
        (["--no-rate-limits-enabled"], False),
        (["--rate-limits-enabled"], True),
    ],
)
def test_run_flags(flags: list[str], enabled: bool | None) -> None:
    args = build_parser().parse_args(["run", *flags])
    assert _flag_values(args)["rate_limits.enabled"] is enabled
