"""Building local events: hashes, signatures and ids that our own checks accept."""

from __future__ import annotations

from typing import Any

import pytest

from federation import hashing, keys, pdu_checks
from federation.builder import build_event
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from tests.unit.federation.conftest import KeyRing

V = KNOWN_ROOM_VERSIONS
KEY = keys.generate_signing_key("a_1")


def _ring() -> KeyRing:
    ring = KeyRing()
    ring.add("example.org", KEY)
    return ring


def _build(version: RoomVersion, **overrides: Any) -> Any:
    legacy = version.identifier in ("1", "2")
    refs = [["$p:example.org", {"sha256": "abc"}]] if legacy else ["$p"]
    fields: dict[str, Any] = {
        "event_type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": "!room:example.org",
        "content": {"body": "hi"},
        "prev_events": refs,
        "auth_events": refs,
        "depth": 7,
        "origin_server_ts": 1_700_000_000_000,
    }
    fields.update(overrides)
    return build_event(version, KEY, **fields)


@pytest.mark.parametrize("version", list(V.values()), ids=lambda v: v.identifier)
def test_built_events_pass_checks(version: RoomVersion) -> None:
    event = _build(version, unsigned={"age": 1})
    assert event.pdu["unsigned"] == {"age": 1}
    assert set(event.pdu["signatures"]) == {"example.org"}
    checked = pdu_checks.check_pdu(event.pdu, version, _ring())
    assert not checked.redacted
    assert checked.event.event_id == event.event_id
    assert hashing.compute_event_id(event.pdu, version) == event.event_id
    if version.identifier in ("1", "2"):
        assert event.event_id.endswith(":example.org")


def test_state_event_and_redacts_placement() -> None:
    state = _build(V["10"], event_type="m.room.topic", state_key="", content={"topic": "t"})
    assert state.state_key == "" and state.is_state
    old = _build(V["10"], event_type="m.room.redaction", redacts="$t", content={})
    assert old.pdu["redacts"] == "$t" and old.redacts == "$t"
    new = _build(V["11"], event_type="m.room.redaction", redacts="$t", content={})
    assert "redacts" not in new.pdu and new.pdu["content"] == {"redacts": "$t"}
    assert new.redacts == "$t"


def test_v12_create_event_has_no_room_id() -> None:
    create = _build(
        V["12"],
        event_type="m.room.create",
        state_key="",
        room_id=None,
        content={"room_version": "12"},
        prev_events=[],
        auth_events=[],
        depth=1,
    )
    assert "room_id" not in create.pdu
    assert create.room_id == "!" + create.event_id[1:]
    pdu_checks.check_pdu(create.pdu, V["12"], _ring())
    with pytest.raises(ValueError, match="room_id"):
        _build(V["12"], room_id=None)
    with pytest.raises(ValueError, match="room_id"):
        _build(V["11"], event_type="m.room.create", state_key="", room_id=None)


def test_content_is_copied_not_shared() -> None:
    content = {"body": "hi"}
    event = _build(V["11"], event_type="m.room.redaction", content=content, redacts="$t")
    assert content == {"body": "hi"}
    assert event.pdu["content"] is not content


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="sender"):
        _build(V["10"], sender="alice")
    with pytest.raises(ValueError, match="pairs"):
        _build(V["1"], prev_events=["$p:example.org"])
    with pytest.raises(ValueError, match="event ids"):
        _build(V["10"], prev_events=[["$p", {}]])
    with pytest.raises(ValueError):
        _build(V["10"], content={"n": 1.5})  # not canonical JSON in room v6+
    _build(V["5"], content={"n": 1.5})  # legacy rooms allow it
