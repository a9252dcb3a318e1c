"""Delivery state of application services, and the event and room facts their
interest is judged on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from homeserver.storage.ephemeral.presence import PresenceRow
from homeserver.storage.ephemeral.receipts import ReceiptRow

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
    # Ephemeral cursors: None while the AS does not receive ephemeral data.
    receipts_position: int | None = None
    presence_position: int | None = None
    pending_ephemeral: list[dict[str, Any]] | None = None
    pending_receipts_up_to: int | None = None
    pending_presence_up_to: int | None = None


@dataclass(frozen=True, slots=True)
class EventHead:
    """The fields of an event that interest is decided on."""

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    stream_ordering: int


async def delivery_state(
    conn: AsyncConnection,
    as_id: str,
    start_at: int,
    ephemeral_start: tuple[int, int] | None = None,
) -> DeliveryState:
    """The AS's row, created at `start_at` (it hears only of later events) when new.

    With `ephemeral_start` (the receipts and presence positions now), the ephemeral
    cursors start there when unset; without it they are cleared, so a service that
    turns `receive_ephemeral` on later is not flooded with a backlog."""
    await conn.execute(
        "INSERT INTO appservice_delivery (as_id, last_stream_ordering) VALUES (%s, %s)"
        " ON CONFLICT (as_id) DO NOTHING",
        (as_id, start_at),
    )
    receipts_at, presence_at = ephemeral_start if ephemeral_start is not None else (None, None)
    cur = await conn.execute(
        "UPDATE appservice_delivery SET"
        " receipts_position = CASE WHEN %(on)s"
        "  THEN COALESCE(receipts_position, %(receipts)s) END,"
        " presence_position = CASE WHEN %(on)s"
        "  THEN COALESCE(presence_position, %(presence)s) END"
        " WHERE as_id = %(as_id)s"
        " RETURNING last_stream_ordering, next_txn_id, pending_txn_id, pending_event_ids,"
        " pending_up_to, failing_since, retry_at, receipts_position, presence_position,"
        " pending_ephemeral, pending_receipts_up_to, pending_presence_up_to",
        {
            "on": ephemeral_start is not None,
            "receipts": receipts_at,
            "presence": presence_at,
            "as_id": as_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return DeliveryState(int(row[0]), int(row[1]), row[2], list(row[3] or []), *row[4:])


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


async def receipts_after(
    conn: AsyncConnection, after: int, up_to: int, limit: int
) -> list[ReceiptRow]:
    """Public read receipts with `after < stream_id <= up_to`, in stream order."""
    cur = await conn.execute(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
        " FROM receipts WHERE stream_id > %s AND stream_id <= %s AND receipt_type = 'm.read'"
        " ORDER BY stream_id LIMIT %s",
        (after, up_to, limit),
    )
    return [ReceiptRow(*row) for row in await cur.fetchall()]


async def presence_after(
    conn: AsyncConnection, after: int, up_to: int, limit: int
) -> list[PresenceRow]:
    """Presence rows changed at `after < stream_id <= up_to`, in stream order."""
    cur = await conn.execute(
        "SELECT user_id, state, status_msg, last_active_ts, last_seen_ts, stream_id"
        " FROM presence WHERE stream_id > %s AND stream_id <= %s ORDER BY stream_id LIMIT %s",
        (after, up_to, limit),
    )
    return [PresenceRow(*row) for row in await cur.fetchall()]


async def joined_rooms_of(conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, list[str]]:
    """Per user, the rooms they are joined to (users in none are left out)."""
    cur = await conn.execute(
        "SELECT user_id, room_id FROM room_memberships"
        " WHERE user_id = ANY(%s) AND membership = 'join'",
        (list(user_ids),),
    )
    out: dict[str, list[str]] = {}
    for user_id, room_id in await cur.fetchall():
        out.setdefault(user_id, []).append(room_id)
    return out


async def record_pending(
    conn: AsyncConnection,
    as_id: str,
    txn_id: int,
    event_ids: list[str],
    up_to: int,
    ephemeral: list[dict[str, Any]] | None = None,
    receipts_up_to: int | None = None,
    presence_up_to: int | None = None,
) -> None:
    """Remember the transaction before sending it, so a retry sends the same one."""
    await conn.execute(
        "UPDATE appservice_delivery SET pending_txn_id = %s, pending_event_ids = %s,"
        " pending_up_to = %s, pending_ephemeral = %s, pending_receipts_up_to = %s,"
        " pending_presence_up_to = %s WHERE as_id = %s",
        (
            txn_id,
            event_ids,
            up_to,
            Jsonb(ephemeral) if ephemeral is not None else None,
            receipts_up_to,
            presence_up_to,
            as_id,
        ),
    )


async def complete(
    conn: AsyncConnection,
    as_id: str,
    up_to: int,
    *,
    used_txn: bool,
    receipts_up_to: int | None = None,
    presence_up_to: int | None = None,
) -> None:
    """The AS took the pending transaction (or nothing needed sending up to `up_to`)."""
    await conn.execute(
        "UPDATE appservice_delivery SET last_stream_ordering = GREATEST(last_stream_ordering, %s),"
        " receipts_position = GREATEST(receipts_position, %s),"
        " presence_position = GREATEST(presence_position, %s),"
        " next_txn_id = next_txn_id + %s, pending_txn_id = NULL, pending_event_ids = NULL,"
        " pending_up_to = NULL, pending_ephemeral = NULL, pending_receipts_up_to = NULL,"
        " pending_presence_up_to = NULL, failing_since = NULL, retry_at = NULL"
        " WHERE as_id = %s",
        (up_to, receipts_up_to, presence_up_to, 1 if used_txn else 0, as_id),
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
