"""What the writer stores of an event: its row (`event_record`), after the size checks
every event this server makes must pass (`check_limits`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from federation.events import Event
from federation.pdu_checks import MAX_ID_BYTES, MAX_PDU_BYTES
from homeserver.services.core.errors import ServiceError, bad_json
from homeserver.storage.rooms import events as event_store


def check_limits(event: Event) -> None:
    """Refuse to create an event past the spec's size limits: other servers would reject
    it, and the room could no longer federate it."""
    for name in ("type", "state_key"):
        value = event.pdu.get(name)
        if isinstance(value, str) and len(value.encode()) > MAX_ID_BYTES:
            raise bad_json(f"Event {name} is longer than {MAX_ID_BYTES} bytes")
    if len(orjson.dumps(event.pdu)) > MAX_PDU_BYTES:
        raise ServiceError(413, "M_TOO_LARGE", f"Event is larger than {MAX_PDU_BYTES} bytes")


def _relation(content: Mapping[str, Any]) -> tuple[str | None, str | None]:
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None, None
    event_id = relates.get("event_id")
    rel_type = relates.get("rel_type")
    if isinstance(event_id, str) and isinstance(rel_type, str):
        return event_id, rel_type
    return None, None


def event_record(event: Event) -> event_store.NewEvent:
    relates_to, rel_type = _relation(event.content)
    pdu = {k: v for k, v in event.pdu.items() if k != "unsigned"}
    url = event.content.get("url")
    return event_store.NewEvent(
        event_id=event.event_id,
        room_id=event.room_id,
        type=event.type,
        state_key=event.state_key,
        sender=event.sender,
        depth=event.depth,
        origin_server_ts=event.origin_server_ts,
        json=orjson.dumps(pdu).decode(),
        prev_event_ids=event.prev_event_ids,
        auth_event_ids=event.auth_event_ids,
        relates_to=relates_to,
        rel_type=rel_type,
        contains_url=isinstance(url, str) and url.startswith("mxc://"),
    )
