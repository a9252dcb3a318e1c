"""Events as clients see them: the client event format, redactions applied.

The stored PDU is never changed; a redacted event is redacted here, on the way
out, with its room version's algorithm, and carries the redaction that removed
its content in `unsigned.redacted_because`.

Edits are never applied on the server (spec v1.7+): an edited event keeps its own
content and carries its latest edit in the bundled aggregations
(`unsigned.m.relations`), which a page of events gets in a few queries, not one per
event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from federation.events import Event
from federation.redaction import redact
from federation.types import JsonDict
from homeserver.services.core import clock
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.timeline.visibility import event_of, filter_visible
from homeserver.storage.core.pool import Connection
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms.events import EventRow
from homeserver.storage.timeline import relations as relation_store


def client_event(
    event: Event,
    *,
    redacted_because: JsonDict | None = None,
    transaction_id: str | None = None,
    now_ms: int | None = None,
    membership: str | None = None,
    relations: JsonDict | None = None,
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
    now = now_ms if now_ms is not None else clock.now_ms()
    unsigned["age"] = max(0, now - event.origin_server_ts)
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if membership is not None:
        unsigned["membership"] = membership
    if relations:
        unsigned["m.relations"] = relations
    out["unsigned"] = unsigned
    return out


def federation_event(event: Event, unsigned: JsonDict, *, redacted: bool = False) -> JsonDict:
    """The event as servers exchange it, for filters asking `event_format: federation`.

    The stored PDU (pruned when redacted), plus its event id, which room versions 3
    and later leave out of the PDU yet clients still need to refer to the event, and
    the same `unsigned` a client event would carry.
    """
    pdu = redact(event.pdu, event.room_version) if redacted else event.pdu
    out = dict(pdu)
    out["event_id"] = event.event_id
    out["unsigned"] = unsigned
    return out


async def format_events(
    conn: Connection,
    cache: EventCache,
    event_ids: Sequence[str],
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    rows: Mapping[str, EventRow] | None = None,
    memberships: Mapping[str, str] | None = None,
    txn_ids: Mapping[str, str] | None = None,
    aggregations: bool = False,
) -> list[JsonDict]:
    """Client events for `event_ids` (unknown ids are skipped), in the given order.

    `rows` saves loading events the caller already holds; `memberships` fills
    `unsigned.membership` (the requester's membership at each event, which history
    visibility computes anyway); `txn_ids`, the transaction ids of the requester's
    device, saves looking them up; `aggregations` bundles relations for `user_id`.
    """
    if rows is None:
        rows = await event_store.get_events(conn, event_ids)
    redaction_ids = [r.redacted_by for r in rows.values() if r.redacted_by]
    redactions: dict[str, JsonDict] = {}
    if redaction_ids:
        redaction_rows = await event_store.get_events(conn, redaction_ids)
        for rid, redaction in redaction_rows.items():
            redactions[rid] = client_event(event_of(cache, redaction))
    if txn_ids is None:
        txn_ids = {}
        own = [eid for eid, row in rows.items() if event_of(cache, row).sender == user_id]
        if own and device_id is not None:
            txn_ids = await event_store.txn_ids_for(conn, user_id or "", device_id, own)
    now = clock.now_ms()
    bundled: dict[str, JsonDict] = {}
    if aggregations and user_id is not None:
        bundled = await bundled_aggregations(conn, cache, user_id, list(rows.values()), now)
    out = []
    for event_id in event_ids:
        row = rows.get(event_id)
        if row is None:
            continue
        out.append(
            client_event(
                event_of(cache, row),
                redacted_because=redactions.get(row.redacted_by) if row.redacted_by else None,
                transaction_id=txn_ids.get(event_id),
                now_ms=now,
                membership=memberships.get(event_id) if memberships is not None else None,
                relations=bundled.get(event_id),
            )
        )
    return out


def latest_edit(original: Event, edits: Sequence[relation_store.Edit]) -> str | None:
    """The edit that replaces `original` for clients: the most recent (by timestamp,
    then event id) of those by the same sender, of the same type, neither being state,
    carrying `m.new_content`; none when the original is itself an edit."""
    relates = original.content.get("m.relates_to")
    if (
        isinstance(relates, dict)
        and relates.get("rel_type") == "m.replace"
        and isinstance(relates.get("event_id"), str)
    ):
        return None
    valid = [
        edit
        for edit in edits
        if edit.room_id == original.room_id
        and edit.sender == original.sender
        and edit.type == original.type
        and not edit.is_state
        and not original.is_state
        and edit.has_new_content
    ]
    if not valid:
        return None
    return max(valid, key=lambda edit: (edit.origin_server_ts, edit.event_id)).event_id


async def bundled_aggregations(
    conn: Connection, cache: EventCache, user_id: str, rows: Sequence[EventRow], now: int
) -> dict[str, JsonDict]:
    """`unsigned.m.relations` for each of `rows` that has any: the thread (latest event,
    count, whether the user took part), the latest valid edit, and references.

    State events get none. The thread's latest event and the edit are events handed to
    the client, so history visibility applies to them too.
    """
    parents = {row.event_id: event_of(cache, row) for row in rows}
    parents = {eid: event for eid, event in parents.items() if not event.is_state}
    rooms = {eid: event.room_id for eid, event in parents.items()}
    found = await relation_store.aggregations(conn, rooms, user_id)
    redacted = {row.event_id for row in rows if row.redacted_by}
    edits: dict[str, str] = {}
    for parent_id, candidates in found.edits.items():
        if parent_id not in redacted:
            edit_id = latest_edit(parents[parent_id], candidates)
            if edit_id is not None:
                edits[parent_id] = edit_id
    nested_ids = [t.latest_event_id for t in found.threads.values()] + list(edits.values())
    if not nested_ids and not found.references:
        return {}
    nested_rows = await event_store.get_events(conn, nested_ids)
    visible = await filter_visible(conn, cache, user_id, list(nested_rows.values()))
    nested = {row.event_id: client_event(event_of(cache, row), now_ms=now) for row in visible.rows}
    out: dict[str, JsonDict] = {}
    for parent_id, summary in found.threads.items():
        latest = nested.get(summary.latest_event_id)
        if latest is not None:
            out.setdefault(parent_id, {})["m.thread"] = {
                "latest_event": latest,
                "count": summary.count,
                "current_user_participated": summary.participated
                or parents[parent_id].sender == user_id,
            }
    for parent_id, edit_id in edits.items():
        edit = nested.get(edit_id)
        if edit is not None:
            out.setdefault(parent_id, {})["m.replace"] = edit
    for parent_id, references in found.references.items():
        out.setdefault(parent_id, {})["m.reference"] = {
            "chunk": [{"event_id": event_id} for event_id in references]
        }
    return out
