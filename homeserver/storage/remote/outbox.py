"""The outbound federation queue per destination, destination health, and the per-destination
advisory lock that keeps two worker processes from sending to one destination at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection

# First key of the two-key advisory lock form: a namespace for destination locks.
_LOCK_NAMESPACE = 0x46656444  # "FedD"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    kind: str  # "pdu" | "edu"
    event_id: str | None
    edu_json: str | None


@dataclass(frozen=True, slots=True)
class DestinationHealth:
    failure_count: int
    retry_interval_ms: int
    retry_at_ts: int | None


async def enqueue_pdus(conn: AsyncConnection, destinations: Sequence[str], event_id: str) -> None:
    await conn.execute(
        "INSERT INTO federation_outbox (destination, kind, event_id)"
        " SELECT d, 'pdu', %s FROM unnest(%s::text[]) AS d",
        (event_id, list(destinations)),
    )


async def enqueue_edu(conn: AsyncConnection, destination: str, edu_json: str) -> None:
    await conn.execute(
        "INSERT INTO federation_outbox (destination, kind, edu_json) VALUES (%s, 'edu', %s)",
        (destination, edu_json),
    )


@dataclass(frozen=True, slots=True)
class RecordedTransaction:
    txn_id: str
    origin_server_ts: int
    rows: list[OutboxRow]


async def next_rows(conn: AsyncConnection, destination: str, limit: int) -> list[OutboxRow]:
    """The oldest rows not yet part of a recorded transaction."""
    cur = await conn.execute(
        "SELECT position, kind, event_id, edu_json FROM federation_outbox"
        " WHERE destination = %s AND txn_id IS NULL ORDER BY position LIMIT %s",
        (destination, limit),
    )
    return [OutboxRow(int(r[0]), r[1], r[2], r[3]) for r in await cur.fetchall()]


async def recorded_transaction(
    conn: AsyncConnection, destination: str
) -> RecordedTransaction | None:
    """The transaction recorded for `destination` and not yet answered, if any: whoever
    sends next must send exactly it again."""
    cur = await conn.execute(
        "SELECT txn_id, txn_ts FROM federation_outbox WHERE destination = %s"
        " AND txn_id IS NOT NULL ORDER BY position LIMIT 1",
        (destination,),
    )
    head = await cur.fetchone()
    if head is None:
        return None
    cur = await conn.execute(
        "SELECT position, kind, event_id, edu_json FROM federation_outbox"
        " WHERE destination = %s AND txn_id = %s ORDER BY position",
        (destination, head[0]),
    )
    rows = [OutboxRow(int(r[0]), r[1], r[2], r[3]) for r in await cur.fetchall()]
    return RecordedTransaction(head[0], int(head[1]), rows)


async def record_transaction(
    conn: AsyncConnection, txn_id: str, origin_server_ts: int, positions: Sequence[int]
) -> None:
    """Mark these rows as the contents of transaction `txn_id`, before it is sent."""
    await conn.execute(
        "UPDATE federation_outbox SET txn_id = %s, txn_ts = %s WHERE position = ANY(%s)",
        (txn_id, origin_server_ts, list(positions)),
    )


async def has_rows(conn: AsyncConnection, destination: str) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM federation_outbox WHERE destination = %s)", (destination,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def delete_rows(conn: AsyncConnection, positions: Sequence[int]) -> None:
    await conn.execute("DELETE FROM federation_outbox WHERE position = ANY(%s)", (list(positions),))


async def pending_destinations(conn: AsyncConnection) -> list[tuple[str, int | None]]:
    """Destinations with something queued, with their retry time (None: not backing off).

    Every process runs this every few seconds: the distinct destinations are found by
    skipping through the index, one probe each, however long a dead server's queue."""
    cur = await conn.execute(
        "WITH RECURSIVE o(destination) AS ("
        " (SELECT destination FROM federation_outbox ORDER BY destination LIMIT 1)"
        " UNION ALL SELECT (SELECT f.destination FROM federation_outbox f"
        " WHERE f.destination > o.destination ORDER BY f.destination LIMIT 1)"
        " FROM o WHERE o.destination IS NOT NULL)"
        " SELECT o.destination, d.retry_at_ts FROM o LEFT JOIN destinations d"
        " USING (destination) WHERE o.destination IS NOT NULL"
    )
    return [(r[0], None if r[1] is None else int(r[1])) for r in await cur.fetchall()]


async def get_health(conn: AsyncConnection, destination: str) -> DestinationHealth:
    cur = await conn.execute(
        "SELECT failure_count, retry_interval_ms, retry_at_ts FROM destinations"
        " WHERE destination = %s",
        (destination,),
    )
    row = await cur.fetchone()
    if row is None:
        return DestinationHealth(0, 0, None)
    return DestinationHealth(int(row[0]), int(row[1]), None if row[2] is None else int(row[2]))


async def record_success(conn: AsyncConnection, destination: str, now_ms: int) -> None:
    await conn.execute(
        "INSERT INTO destinations (destination, last_success_ts) VALUES (%s, %s)"
        " ON CONFLICT (destination) DO UPDATE SET last_success_ts = EXCLUDED.last_success_ts,"
        " failure_count = 0, retry_interval_ms = 0, retry_at_ts = NULL, last_error = NULL,"
        " failure_ts = NULL",
        (destination, now_ms),
    )


async def record_failure(
    conn: AsyncConnection, destination: str, retry_interval_ms: int, retry_at_ts: int, error: str
) -> None:
    await conn.execute(
        "INSERT INTO destinations (destination, failure_count, retry_interval_ms, retry_at_ts,"
        " last_error, failure_ts) VALUES (%s, 1, %s, %s, %s, %s)"
        " ON CONFLICT (destination) DO UPDATE SET"
        " failure_count = destinations.failure_count + 1,"
        " retry_interval_ms = EXCLUDED.retry_interval_ms, retry_at_ts = EXCLUDED.retry_at_ts,"
        " last_error = EXCLUDED.last_error,"
        # The earliest failure of the streak (LEAST skips a NULL).
        " failure_ts = LEAST(destinations.failure_ts, EXCLUDED.failure_ts)",
        (
            destination,
            retry_interval_ms,
            retry_at_ts,
            error[:1000],
            retry_at_ts - retry_interval_ms,
        ),
    )


async def clear_retry(conn: AsyncConnection, destination: str) -> None:
    """Stop waiting out a backoff (the destination was heard from); the interval stays, so
    a failure right after continues the progression."""
    await conn.execute(
        "UPDATE destinations SET retry_at_ts = NULL WHERE destination = %s", (destination,)
    )


async def try_lock_destination(conn: AsyncConnection, destination: str) -> bool:
    """Take the session-level lock on a destination; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, destination)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock_destination(conn: AsyncConnection, destination: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, destination)
    )
