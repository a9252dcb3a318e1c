"""Token buckets in PostgreSQL, shared by every process: one statement refills a bucket
by the time since its last use and spends a token if there is one (see
services/core/ratelimit.py for the arithmetic this mirrors)."""

from __future__ import annotations

from psycopg import AsyncConnection


async def take(
    conn: AsyncConnection, action: str, key: str, per_second: float, burst: int, now_ms: int
) -> tuple[bool, float]:
    """Spend one token of the bucket if it holds one: whether it did, and the tokens
    left (when refused: the fraction of a token it holds)."""
    cur = await conn.execute(
        "INSERT INTO rate_limit_buckets AS b (action, key, tokens, updated_ms, allowed)"
        " VALUES (%(action)s, %(key)s, %(burst)s - 1, %(now)s, true)"
        " ON CONFLICT (action, key) DO UPDATE SET"
        " tokens = LEAST(%(burst)s, b.tokens"
        "  + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s / 1000.0)"
        "  - CASE WHEN LEAST(%(burst)s, b.tokens"
        "  + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s / 1000.0) >= 1 THEN 1 ELSE 0 END,"
        " allowed = LEAST(%(burst)s, b.tokens"
        "  + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s / 1000.0) >= 1,"
        " updated_ms = GREATEST(b.updated_ms, %(now)s)"
        " RETURNING tokens, allowed",
        {"action": action, "key": key, "burst": float(burst), "rate": per_second, "now": now_ms},
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[1]), float(row[0])


async def forget_full(conn: AsyncConnection, before_ms: int) -> None:
    """Delete buckets untouched since `before_ms`: they have refilled, and a missing
    bucket starts full."""
    await conn.execute("DELETE FROM rate_limit_buckets WHERE updated_ms < %s", (before_ms,))
