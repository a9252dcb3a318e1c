"""Events of the room DAG: rows, edges, transaction ids and stream positions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

# A send's (user, device, scope, txn id): what makes a client's retransmission the same.
TxnKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    room_id: str
    room_version: str
    json: str
    stream_ordering: int | None
    state_group: int | None
    rejected_reason: str | None
    redacted_by: str | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What the events table records about an event beyond its JSON."""

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    depth: int
    origin_server_ts: int
    json: str
    prev_event_ids: Sequence[str]
    auth_event_ids: Sequence[str]
    relates_to: str | None
    rel_type: str | None
    contains_url: bool


async def insert_event(
    conn: AsyncConnection,
    event: NewEvent,
    *,
    stream_ordering: int | None,
    state_group: int | None,
    rejected_reason: str | None = None,
    soft_failed: bool = False,
) -> None:
    await conn.execute(
        "INSERT INTO events (event_id, room_id, type, state_key, sender, depth,"
        " origin_server_ts, stream_ordering, json, state_group, rejected_reason,"
        " relates_to, rel_type, contains_url, soft_failed, auth_event_ids)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            event.event_id,
            event.room_id,
            event.type,
            event.state_key,
            event.sender,
            event.depth,
            event.origin_server_ts,
            stream_ordering,
            event.json,
            state_group,
            rejected_reason,
            event.relates_to,
            event.rel_type,
            event.contains_url,
            soft_failed,
            list(event.auth_event_ids),
        ),
    )
    if event.prev_event_ids:
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO event_edges (event_id, prev_event_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                [(event.event_id, p) for p in event.prev_event_ids],
            )


_INSERT_NEW_EXTREMITY_CTES = (
    "ev AS (INSERT INTO events (event_id, room_id, type, state_key, sender, depth,"
    " origin_server_ts, stream_ordering, json, state_group, relates_to, rel_type,"
    " contains_url, auth_event_ids)"
    " VALUES (%(id)s, %(room)s, %(type)s, %(state_key)s, %(sender)s, %(depth)s, %(ts)s,"
    " %(ordering)s, %(json)s, %(group)s, %(relates_to)s, %(rel_type)s, %(url)s,"
    " %(auth)s)),"
    " edges AS (INSERT INTO event_edges (event_id, prev_event_id)"
    " SELECT %(id)s, unnest(%(prev)s::text[]) ON CONFLICT DO NOTHING),"
    " gone AS (DELETE FROM forward_extremities"
    " WHERE room_id = %(room)s AND event_id = ANY(%(replaced)s))"
    " INSERT INTO forward_extremities (room_id, event_id) VALUES (%(room)s, %(id)s)"
    " ON CONFLICT DO NOTHING"
)
_INSERT_NEW_EXTREMITY = "WITH " + _INSERT_NEW_EXTREMITY_CTES
_INSERT_NEW_EXTREMITY_TXN = (
    "WITH txn AS (INSERT INTO event_txn_ids (user_id, device_id, scope, txn_id, event_id)"
    " VALUES (%(txn_user)s, %(txn_device)s, %(txn_scope)s, %(txn_id)s, %(id)s)), "
    + _INSERT_NEW_EXTREMITY_CTES
)


async def insert_new_extremity(
    conn: AsyncConnection,
    event: NewEvent,
    *,
    stream_ordering: int,
    state_group: int | None,
    replaced: Sequence[str],
    txn: TxnKey | None = None,
) -> None:
    """A local event, its edges, and its place as a forward extremity of its room in
    place of `replaced`, in one statement (the same rows as `insert_event` and
    rooms.replace_forward_extremities, for the writer's hot path); with `txn`, the
    client's transaction id of the send too (its `event_txn_ids` row)."""
    params: dict[str, Any] = {}
    if txn is not None:
        params["txn_user"], params["txn_device"], params["txn_scope"], params["txn_id"] = txn
    await conn.execute(
        _INSERT_NEW_EXTREMITY_TXN if txn is not None else _INSERT_NEW_EXTREMITY,
        {
            **params,
            "id": event.event_id,
            "room": event.room_id,
            "type": event.type,
            "state_key": event.state_key,
            "sender": event.sender,
            "depth": event.depth,
            "ts": event.origin_server_ts,
            "ordering": stream_ordering,
            "json": event.json,
            "group": state_group,
            "relates_to": event.relates_to,
            "rel_type": event.rel_type,
            "url": event.contains_url,
            "auth": list(event.auth_event_ids),
            "prev": list(event.prev_event_ids),
            "replaced": list(replaced),
        },
    )


_EVENT_COLUMNS = (
    "e.event_id, e.room_id, r.room_version, e.json, e.stream_ordering, e.state_group,"
    " e.rejected_reason, e.redacted_by"
)


async def get_events(conn: AsyncConnection, event_ids: Iterable[str]) -> dict[str, EventRow]:
    ids = list(event_ids)
    if not ids:
        return {}
    cur = await conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r USING (room_id)"
        " WHERE e.event_id = ANY(%s)",
        (ids,),
    )
    return {row[0]: EventRow(*row) for row in await cur.fetchall()}


async def get_depths(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT event_id, depth FROM events WHERE event_id = ANY(%s)", (list(event_ids),)
    )
    return {eid: int(depth) for eid, depth in await cur.fetchall()}


async def get_txn_event(
    conn: AsyncConnection, user_id: str, device_id: str, scope: str, txn_id: str
) -> str | None:
    """The event a device's earlier request to the same path (`scope`) created."""
    cur = await conn.execute(
        "SELECT event_id FROM event_txn_ids"
        " WHERE user_id = %s AND device_id = %s AND scope = %s AND txn_id = %s",
        (user_id, device_id, scope, txn_id),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def queue_txn_events(
    conn: AsyncConnection, keys: Sequence[TxnKey]
) -> Callable[[], Awaitable[dict[TxnKey, str]]]:
    """`get_txn_event` for many (user, device, scope, txn id) keys in one statement,
    sent without waiting (pipeline mode): the returned function reads the answer, which
    comes back with the next statement that is waited for."""
    if not keys:
        return _no_txn_events
    columns = [list(column) for column in zip(*keys, strict=True)]
    cur = await conn.execute(
        "SELECT t.user_id, t.device_id, t.scope, t.txn_id, t.event_id FROM event_txn_ids t"
        " JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS k(u, d, s, x)"
        " ON t.user_id = k.u AND t.device_id = k.d AND t.scope = k.s AND t.txn_id = k.x",
        columns,
    )

    async def fetch() -> dict[TxnKey, str]:
        return {(u, d, s, x): eid for u, d, s, x, eid in await cur.fetchall()}

    return fetch


async def _no_txn_events() -> dict[TxnKey, str]:
    return {}


async def txn_ids_for(
    conn: AsyncConnection, user_id: str, device_id: str, event_ids: Sequence[str]
) -> dict[str, str]:
    """Transaction ids this device used for any of these events. Looked up by event
    alone (see timeline.paginate): the (user, device) prefix of the key would read
    every send the device ever made."""
    cur = await conn.execute(*txn_ids_query(event_ids))
    return txn_ids_found(await cur.fetchall(), user_id, device_id)


def txn_ids_query(event_ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """`txn_ids_for`'s statement, for a caller that sends it in its own pipeline."""
    return (
        "SELECT event_id, user_id, device_id, txn_id FROM event_txn_ids WHERE event_id = ANY(%s)",
        (list(event_ids),),
    )


def txn_ids_found(rows: Sequence[tuple[Any, ...]], user_id: str, device_id: str) -> dict[str, str]:
    return {eid: txn for eid, user, device, txn in rows if (user, device) == (user_id, device_id)}


async def mark_redacted(conn: AsyncConnection, event_id: str, redaction_id: str) -> None:
    await conn.execute(
        "UPDATE events SET redacted_by = %s WHERE event_id = %s AND redacted_by IS NULL",
        (redaction_id, event_id),
    )
