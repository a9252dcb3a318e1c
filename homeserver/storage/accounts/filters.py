"""Filters users upload for /sync and /messages, numbered per user from 0."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# Advisory lock class for numbering one user's filters.
_FILTER_LOCK_CLASS = 0x66696C74


async def add_filter(conn: AsyncConnection, user_id: str, definition: Mapping[str, Any]) -> int:
    """Store a filter and return its id; an identical filter already stored keeps its id,
    since clients upload the same filter on every start."""
    body = Jsonb(definition, dumps=lambda obj: orjson.dumps(obj).decode())
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_FILTER_LOCK_CLASS, user_id)
        )
        cur = await conn.execute(
            "SELECT filter_id FROM user_filters WHERE user_id = %s AND filter = %s"
            " ORDER BY filter_id LIMIT 1",
            (user_id, body),
        )
        row = await cur.fetchone()
        if row is not None:
            return int(row[0])
        cur = await conn.execute(
            "INSERT INTO user_filters (user_id, filter_id, filter)"
            " SELECT %s, COALESCE(MAX(filter_id) + 1, 0), %s FROM user_filters WHERE user_id = %s"
            " RETURNING filter_id",
            (user_id, body, user_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def get_filter(conn: AsyncConnection, user_id: str, filter_id: int) -> dict[str, Any] | None:
    """The stored filter JSON, or None."""
    cur = await conn.execute(
        "SELECT filter::text FROM user_filters WHERE user_id = %s AND filter_id = %s",
        (user_id, filter_id),
    )
    row = await cur.fetchone()
    return orjson.loads(row[0]) if row else None
