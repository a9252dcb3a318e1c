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


@dataclass(frozen=True, slots=True)
class TransactionLimits:
    max_pdus: int
    max_edus: int


# For each destination asked about and not backing off: the rows of the transaction
# recorded and not yet answered, if there is one (whoever sends next must send exactly
# it again); else a new one, recorded now under the id given for it, made of the longest
# prefix of the queue within the limits (running counts of PDUs and EDUs only grow, so
# the rows within both limits are that prefix).
_BEGIN = """
WITH asked AS (
    SELECT a.destination, a.txn_id FROM unnest(%(destinations)s::text[], %(txn_ids)s::text[])
        AS a(destination, txn_id)
    WHERE NOT EXISTS (SELECT 1 FROM destinations x
        WHERE x.destination = a.destination AND x.retry_at_ts > %(now)s)
), head AS (
    SELECT a.destination, h.txn_id FROM asked a CROSS JOIN LATERAL (
        SELECT f.txn_id FROM federation_outbox f
        WHERE f.destination = a.destination AND f.txn_id IS NOT NULL
        ORDER BY f.position LIMIT 1) h
), fresh AS (
    SELECT o.position, a.txn_id,
        count(*) FILTER (WHERE o.kind = 'pdu') OVER w AS pdus,
        count(*) FILTER (WHERE o.kind = 'edu') OVER w AS edus
    FROM asked a CROSS JOIN LATERAL (
        SELECT f.position, f.kind FROM federation_outbox f
        WHERE f.destination = a.destination AND f.txn_id IS NULL
        ORDER BY f.position LIMIT %(rows)s) o
    WHERE NOT EXISTS (SELECT 1 FROM head WHERE head.destination = a.destination)
    WINDOW w AS (PARTITION BY a.destination ORDER BY o.position)
), marked AS (
    UPDATE federation_outbox f SET txn_id = fresh.txn_id, txn_ts = %(ts)s FROM fresh
    WHERE f.position = fresh.position
        AND fresh.pdus <= %(max_pdus)s AND fresh.edus <= %(max_edus)s
    RETURNING f.destination, f.txn_id, f.txn_ts, f.position, f.kind, f.event_id, f.edu_json
)
SELECT * FROM marked
UNION ALL
SELECT f.destination, f.txn_id, f.txn_ts, f.position, f.kind, f.event_id, f.edu_json
FROM head JOIN federation_outbox f USING (destination, txn_id)
"""


async def begin_transactions(
    conn: AsyncConnection,
    txn_ids: dict[str, str],
    ts: int,
    now_ms: int,
    limits: TransactionLimits,
) -> tuple[dict[str, DestinationHealth], dict[str, RecordedTransaction]]:
    """For many destinations in one round trip: their health, and the transaction each
    must send next unless it is backing off (an unanswered one again, else a new one,
    recorded under the id `txn_ids` gives it and time `ts` before it is sent); a
    destination with nothing queued has none. The caller holds the destinations' locks."""
    destinations = list(txn_ids)
    async with conn.pipeline():
        health_cur = await conn.execute(
            "SELECT destination, failure_count, retry_interval_ms, retry_at_ts"
            " FROM destinations WHERE destination = ANY(%s)",
            (destinations,),
        )
        begin_cur = await conn.execute(
            _BEGIN,
            {
                "destinations": destinations,
                "txn_ids": list(txn_ids.values()),
                "now": now_ms,
                "rows": limits.max_pdus + limits.max_edus,
                "ts": ts,
                "max_pdus": limits.max_pdus,
                "max_edus": limits.max_edus,
            },
        )
        health_rows = await health_cur.fetchall()
        begun = await begin_cur.fetchall()
    health = {
        r[0]: DestinationHealth(int(r[1]), int(r[2]), None if r[3] is None else int(r[3]))
        for r in health_rows
    }
    transactions: dict[str, RecordedTransaction] = {}
    for r in sorted(begun, key=lambda r: int(r[3])):
        txn = transactions.setdefault(r[0], RecordedTransaction(r[1], int(r[2]), []))
        txn.rows.append(OutboxRow(int(r[3]), r[4], r[5], r[6]))
    return health, transactions


async def has_rows(conn: AsyncConnection, destination: str) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM federation_outbox WHERE destination = %s)", (destination,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def with_rows(conn: AsyncConnection, destinations: list[str]) -> set[str]:
    """Those of these destinations with something queued."""
    cur = await conn.execute(
        "SELECT d FROM unnest(%s::text[]) AS d"
        " WHERE EXISTS (SELECT 1 FROM federation_outbox WHERE destination = d)",
        (destinations,),
    )
    return {r[0] for r in await cur.fetchall()}


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


async def finish_transactions(
    conn: AsyncConnection, destinations: list[str], positions: list[int], now_ms: int
) -> None:
    """The transactions carrying these rows were answered: delete the rows, and record
    the success of their destinations, in one statement."""
    await conn.execute(
        "WITH gone AS (DELETE FROM federation_outbox WHERE position = ANY(%s))"
        " INSERT INTO destinations (destination, last_success_ts)"
        " SELECT DISTINCT d, %s::bigint FROM unnest(%s::text[]) AS d"
        " ON CONFLICT (destination) DO UPDATE SET last_success_ts = EXCLUDED.last_success_ts,"
        " failure_count = 0, retry_interval_ms = 0, retry_at_ts = NULL, last_error = NULL,"
        " failure_ts = NULL",
        (positions, now_ms, destinations),
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


async def try_lock_destinations(conn: AsyncConnection, destinations: list[str]) -> set[str]:
    """Take the session-level locks on these destinations, in one statement; those taken
    (the others are held by another session)."""
    cur = await conn.execute(
        "SELECT d, pg_try_advisory_lock(%s, hashtext(d)) FROM unnest(%s::text[]) AS d",
        (_LOCK_NAMESPACE, destinations),
    )
    return {r[0] for r in await cur.fetchall() if r[1]}


async def unlock_destinations(conn: AsyncConnection, destinations: list[str]) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(d)) FROM unnest(%s::text[]) AS d",
        (_LOCK_NAMESPACE, destinations),
    )
