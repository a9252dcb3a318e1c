"""Delivery state of application services, and the event and room facts their
interest is judged on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection

# First key of the two-key advisory locks on application services (pushers use their own).
_LOCK_NAMESPACE = 0x41535644  # "ASVD"
_IN_TIMELINE = "stream_ordering IS NOT NULL AND rejected_reason IS NULL AND NOT soft_failed"


@dataclass(frozen=True, slots=True)
class DeliveryState:
    last_stream_ordering: int
    next_txn_id: int
    pending_txn_id: int | None
    pending_event_ids: list[str]
    pending_up_to: int | None
    failing_since: int | None
    retry_at: int | None


@dataclass(frozen=True, slots=True)
class EventHead:
    """The fields of an event that interest is decided on."""

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    stream_ordering: int


async def delivery_state(conn: AsyncConnection, as_id: str, start_at: int) -> DeliveryState:
    """The AS's row, created at `start_at` (it hears only of later events) when new."""
    await conn.execute(
        "INSERT INTO appservice_delivery (as_id, last_stream_ordering) VALUES (%s, %s)"
        " ON CONFLICT (as_id) DO NOTHING",
        (as_id, start_at),
    )
    cur = await conn.execute(
        "SELECT last_stream_ordering, next_txn_id, pending_txn_id, pending_event_ids,"
        " pending_up_to, failing_since, retry_at FROM appservice_delivery WHERE as_id = %s",
        (as_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return DeliveryState(
        int(row[0]), int(row[1]), row[2], list(row[3] or []), row[4], row[5], row[6]
    )


async def events_after(
    conn: AsyncConnection, after: int, up_to: int, limit: int
) -> list[EventHead]:
    """Timeline events with `after < stream_ordering <= up_to`, in stream order."""
    cur = await conn.execute(
        "SELECT event_id, room_id, type, state_key, sender, stream_ordering FROM events"
        f" WHERE stream_ordering > %s AND stream_ordering <= %s AND {_IN_TIMELINE}"
        " ORDER BY stream_ordering LIMIT %s",
        (after, up_to, limit),
    )
    return [EventHead(*row) for row in await cur.fetchall()]


async def room_members_and_aliases(
    conn: AsyncConnection, room_ids: Sequence[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """Per room: users joined or invited, and the room's local aliases."""
    out: dict[str, tuple[list[str], list[str]]] = {r: ([], []) for r in room_ids}
    cur = await conn.execute(
        "SELECT room_id, user_id FROM room_memberships"
        " WHERE room_id = ANY(%s) AND membership IN ('join', 'invite')",
        (list(room_ids),),
    )
    for room_id, user_id in await cur.fetchall():
        out[room_id][0].append(user_id)
    cur = await conn.execute(
        "SELECT room_id, room_alias FROM room_aliases WHERE room_id = ANY(%s)", (list(room_ids),)
    )
    for room_id, alias in await cur.fetchall():
        out[room_id][1].append(alias)
    return out


async def record_pending(
    conn: AsyncConnection, as_id: str, txn_id: int, event_ids: list[str], up_to: int
) -> None:
    """Remember the transaction before sending it, so a retry sends the same one."""
    await conn.execute(
        "UPDATE appservice_delivery SET pending_txn_id = %s, pending_event_ids = %s,"
        " pending_up_to = %s WHERE as_id = %s",
        (txn_id, event_ids, up_to, as_id),
    )


async def complete(conn: AsyncConnection, as_id: str, up_to: int, *, used_txn: bool) -> None:
    """The AS took the pending transaction (or nothing needed sending up to `up_to`)."""
    await conn.execute(
        "UPDATE appservice_delivery SET last_stream_ordering = GREATEST(last_stream_ordering, %s),"
        " next_txn_id = next_txn_id + %s, pending_txn_id = NULL, pending_event_ids = NULL,"
        " pending_up_to = NULL, failing_since = NULL, retry_at = NULL WHERE as_id = %s",
        (up_to, 1 if used_txn else 0, as_id),
    )


async def record_failure(conn: AsyncConnection, as_id: str, since: int, retry_at: int) -> None:
    await conn.execute(
        "UPDATE appservice_delivery SET failing_since = %s, retry_at = %s WHERE as_id = %s",
        (since, retry_at, as_id),
    )


async def try_lock(conn: AsyncConnection, as_id: str) -> bool:
    """Take the session-level lock on an AS's delivery; False when another session has it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, as_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, as_id: str) -> bool:
    cur = await conn.execute(
        "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, as_id)
    )
    row = await cur.fetchone()
    return bool(row and row[0])
