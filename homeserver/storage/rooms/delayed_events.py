"""Delayed events (MSC4140): events waiting for their time, one row each.

A row is fired inside a transaction that holds its row lock (`lock_due`, `lock_own`),
so two processes never fire one row, and the row goes only once its event is sent.
Deletions made on others' behalf (a member left, a state key was overwritten) skip a
locked row: it is being fired right now, and fails on its own if no longer allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

_COLUMNS = (
    "delay_id, user_id, device_id, room_id, event_type, state_key, content, delay_ms,"
    " running_since, send_ts"
)


@dataclass(frozen=True)
class DelayedEvent:
    delay_id: str
    user_id: str
    device_id: str
    room_id: str
    event_type: str
    state_key: str | None
    content: dict[str, Any]
    delay_ms: int
    running_since: int
    send_ts: int


def _row(row: tuple[Any, ...] | None) -> DelayedEvent | None:
    return None if row is None else DelayedEvent(*row)


async def insert(conn: AsyncConnection, event: DelayedEvent) -> None:
    body = Jsonb(event.content, dumps=lambda obj: orjson.dumps(obj).decode())
    await conn.execute(
        f"INSERT INTO delayed_events ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            event.delay_id,
            event.user_id,
            event.device_id,
            event.room_id,
            event.event_type,
            event.state_key,
            body,
            event.delay_ms,
            event.running_since,
            event.send_ts,
        ),
    )


async def claim_txn(
    conn: AsyncConnection, user_id: str, device_id: str, scope: str, txn_id: str, delay_id: str
) -> str:
    """Record the delay id a request's txn id got; the earlier one if the device already
    sent this request (the caller's transaction then stores nothing new)."""
    cur = await conn.execute(
        "INSERT INTO delayed_event_txn_ids (user_id, device_id, scope, txn_id, delay_id)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING delay_id",
        (user_id, device_id, scope, txn_id, delay_id),
    )
    if await cur.fetchone() is not None:
        return delay_id
    cur = await conn.execute(
        "SELECT delay_id FROM delayed_event_txn_ids"
        " WHERE user_id = %s AND device_id = %s AND scope = %s AND txn_id = %s",
        (user_id, device_id, scope, txn_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def for_user(conn: AsyncConnection, user_id: str) -> list[DelayedEvent]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM delayed_events WHERE user_id = %s ORDER BY send_ts, delay_id",
        (user_id,),
    )
    return [DelayedEvent(*row) for row in await cur.fetchall()]


# `owner` None: whoever holds the delay id may act on it (the id is the secret, as the
# MSC lets a client hand it to a service that restarts the delay on its behalf).
_OWNED = "delay_id = %s AND (%s::text IS NULL OR user_id = %s)"


async def restart(conn: AsyncConnection, owner: str | None, delay_id: str, now_ms: int) -> bool:
    """Start the delay again from now; False when there is no such delayed event."""
    cur = await conn.execute(
        "UPDATE delayed_events SET running_since = %s, send_ts = %s + delay_ms WHERE " + _OWNED,
        (now_ms, now_ms, delay_id, owner, owner),
    )
    return cur.rowcount > 0


async def delete(conn: AsyncConnection, owner: str | None, delay_id: str) -> bool:
    cur = await conn.execute("DELETE FROM delayed_events WHERE " + _OWNED, (delay_id, owner, owner))
    return cur.rowcount > 0


async def lock_due(conn: AsyncConnection, now_ms: int) -> DelayedEvent | None:
    """The earliest delayed event due by now that no other transaction holds, locked
    until this transaction ends."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM delayed_events WHERE send_ts <= %s"
        " ORDER BY send_ts LIMIT 1 FOR UPDATE SKIP LOCKED",
        (now_ms,),
    )
    return _row(await cur.fetchone())


async def lock_own(conn: AsyncConnection, owner: str | None, delay_id: str) -> DelayedEvent | None:
    """One delayed event, locked (waiting while another transaction fires it)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM delayed_events WHERE {_OWNED} FOR UPDATE",
        (delay_id, owner, owner),
    )
    return _row(await cur.fetchone())


async def next_send_ts(conn: AsyncConnection) -> int | None:
    cur = await conn.execute("SELECT min(send_ts) FROM delayed_events")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def delete_of_members(conn: AsyncConnection, room_id: str, user_ids: list[str]) -> None:
    """Drop what these users scheduled in the room (they left it)."""
    await conn.execute(
        "DELETE FROM delayed_events WHERE delay_id IN (SELECT delay_id FROM delayed_events"
        " WHERE room_id = %s AND user_id = ANY(%s) FOR UPDATE SKIP LOCKED)",
        (room_id, user_ids),
    )


async def delete_overwritten(
    conn: AsyncConnection, room_id: str, keys: Mapping[tuple[str, str], str]
) -> None:
    """Drop delayed state events whose state key someone else has just set
    (`keys`: (type, state key) -> the sender who set it), in one statement however many
    state events the transaction wrote."""
    types = [event_type for event_type, _ in keys]
    state_keys = [state_key for _, state_key in keys]
    await conn.execute(
        "DELETE FROM delayed_events WHERE delay_id IN (SELECT d.delay_id FROM delayed_events d"
        " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(event_type, state_key, sender)"
        " ON d.event_type = k.event_type AND d.state_key = k.state_key"
        " AND d.user_id <> k.sender WHERE d.room_id = %s FOR UPDATE OF d SKIP LOCKED)",
        (types, state_keys, list(keys.values()), room_id),
    )


async def delete_of_user(conn: AsyncConnection, user_id: str) -> None:
    """Drop everything a (deactivated) user scheduled."""
    await conn.execute(
        "DELETE FROM delayed_events WHERE delay_id IN (SELECT delay_id FROM delayed_events"
        " WHERE user_id = %s FOR UPDATE SKIP LOCKED)",
        (user_id,),
    )
