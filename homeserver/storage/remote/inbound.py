"""Transactions other servers sent us, with our answers: a server that retries one
(after a timeout, say) through another process behind the load balancer gets the same
answer, and its EDUs are not handled twice."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


async def get_answer(conn: AsyncConnection, origin: str, txn_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT response FROM federation_inbound_transactions WHERE origin = %s AND txn_id = %s",
        (origin, txn_id),
    )
    row = await cur.fetchone()
    return None if row is None else dict(row[0])


async def store_answer(
    conn: AsyncConnection, origin: str, txn_id: str, response: dict[str, Any], now_ms: int
) -> None:
    await conn.execute(
        "INSERT INTO federation_inbound_transactions (origin, txn_id, response, received_ts)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (origin, txn_id, Jsonb(response), now_ms),
    )


async def forget_answers(conn: AsyncConnection, before_ms: int) -> None:
    await conn.execute(
        "DELETE FROM federation_inbound_transactions WHERE received_ts < %s", (before_ms,)
    )
