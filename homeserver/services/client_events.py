"""Events as clients see them: the client event format, redactions applied.

The stored PDU is never changed; a redacted event is redacted here, on the way
out, with its room version's algorithm, and carries the redaction that removed
its content in `unsigned.redacted_because`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from federation.events import Event
from federation.redaction import redact
from homeserver.services.events import EventCache, load_event
from homeserver.storage import events as event_store

JsonDict = dict[str, Any]


def client_event(
    event: Event,
    *,
    redacted_because: JsonDict | None = None,
    transaction_id: str | None = None,
    now_ms: int | None = None,
) -> JsonDict:
    pdu = redact(event.pdu, event.room_version) if redacted_because is not None else event.pdu
    out: JsonDict = {
        "content": pdu.get("content", {}),
        "event_id": event.event_id,
        "origin_server_ts": event.origin_server_ts,
        "room_id": event.room_id,
        "sender": event.sender,
        "type": event.type,
    }
    if event.state_key is not None:
        out["state_key"] = event.state_key
    if event.type == "m.room.redaction" and event.redacts is not None:
        # Clients of every room version may look for either place.
        out["redacts"] = event.redacts
        if redacted_because is None and event.room_version.msc2176_redaction_rules:
            out["content"] = {**out["content"], "redacts": event.redacts}
    unsigned: JsonDict = {}
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    unsigned["age"] = max(0, now - event.origin_server_ts)
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    out["unsigned"] = unsigned
    return out


async def format_events(
    conn: AsyncConnection,
    cache: EventCache,
    event_ids: Sequence[str],
    *,
    user_id: str | None = None,
    device_id: str | None = None,
) -> list[JsonDict]:
    """Client events for `event_ids` (unknown ids are skipped), in the given order."""
    rows = await event_store.get_events(conn, event_ids)
    redaction_ids = [r.redacted_by for r in rows.values() if r.redacted_by]
    redactions: dict[str, JsonDict] = {}
    if redaction_ids:
        redaction_rows = await event_store.get_events(conn, redaction_ids)
        for rid, redaction in redaction_rows.items():
            redactions[rid] = client_event(_cached(cache, redaction))
    txn_ids: dict[str, str] = {}
    if user_id is not None and device_id is not None:
        txn_ids = await event_store.txn_ids_for(conn, user_id, device_id, list(rows))
    now = int(time.time() * 1000)
    out = []
    for event_id in event_ids:
        row = rows.get(event_id)
        if row is None:
            continue
        out.append(
            client_event(
                _cached(cache, row),
                redacted_because=redactions.get(row.redacted_by) if row.redacted_by else None,
                transaction_id=txn_ids.get(event_id),
                now_ms=now,
            )
        )
    return out


def _cached(cache: EventCache, row: event_store.EventRow) -> Event:
    event = cache.get(row.event_id)
    if event is None:
        event = load_event(row)
        cache.put(event)
    return event
