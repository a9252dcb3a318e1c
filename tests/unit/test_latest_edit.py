"""Which edit replaces an event for clients (spec: event replacements)."""

from __future__ import annotations

from typing import Any

from federation.events import Event
from federation.room_versions import get_room_version
from homeserver.services.timeline.format import latest_edit
from homeserver.storage.timeline.relations import Edit

ROOM = "!room:example.org"
ALICE = "@alice:example.org"


def event(event_id: str, content: dict[str, Any], **fields: Any) -> Event:
    pdu = {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": ALICE,
        "content": content,
        "origin_server_ts": 1,
        "depth": 5,
        "prev_events": [],
        "auth_events": [],
        **fields,
    }
    return Event(pdu, get_room_version("12"), event_id)


def candidate(event_id: str, ts: int, **fields: Any) -> Edit:
    values: dict[str, Any] = {
        "event_id": event_id,
        "room_id": ROOM,
        "sender": ALICE,
        "type": "m.room.message",
        "is_state": False,
        "has_new_content": True,
        "origin_server_ts": ts,
        **fields,
    }
    return Edit(**values)


ORIGINAL = event("$original", {"msgtype": "m.text", "body": "hello"})


def test_the_most_recent_valid_edit_wins_ties_by_event_id() -> None:
    edits = [candidate("$a", 10), candidate("$c", 30), candidate("$b", 30)]
    assert latest_edit(ORIGINAL, edits) == "$c"


def test_edits_that_do_not_qualify_are_ignored() -> None:
    edits = [
        candidate("$ok", 1),
        candidate("$other_sender", 9, sender="@mallory:example.org"),
        candidate("$other_type", 9, type="m.room.encrypted"),
        candidate("$state", 9, is_state=True),
        candidate("$no_new_content", 9, has_new_content=False),
        candidate("$other_room", 9, room_id="!elsewhere:example.org"),
    ]
    assert latest_edit(ORIGINAL, edits) == "$ok"
    assert latest_edit(ORIGINAL, edits[1:]) is None


def test_an_edit_is_not_itself_edited() -> None:
    an_edit = event(
        "$edit",
        {
            "body": "* hello!",
            "m.new_content": {"body": "hello!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"},
        },
    )
    assert latest_edit(an_edit, [candidate("$edit2", 5)]) is None


def test_state_events_are_not_edited() -> None:
    topic = event("$topic", {"topic": "t"}, type="m.room.topic", state_key="")
    assert latest_edit(topic, [candidate("$e", 5, type="m.room.topic")]) is None
