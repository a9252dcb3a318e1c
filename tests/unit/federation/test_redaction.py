"""The redaction algorithm of each room version, one test per difference."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.redaction import redact
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

V = KNOWN_ROOM_VERSIONS
ALL = list(V.values())


def _event(event_type: Any, content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "$e:x",
        "type": event_type,
        "room_id": "!r:x",
        "sender": "@u:x",
        "state_key": "",
        "content": content,
        "hashes": {"sha256": "h"},
        "signatures": {"x": {"ed25519:1": "s"}},
        "depth": 3,
        "prev_events": ["$p"],
        "prev_state": [],
        "auth_events": ["$a"],
        "origin": "x",
        "origin_server_ts": 5,
        "membership": "join",
        "unsigned": {"age": 1},
        "extra_top_level": True,
        **extra,
    }


def _content(event_type: str, content: dict[str, Any], version: RoomVersion) -> Any:
    return redact(_event(event_type, content), version)["content"]


@pytest.mark.parametrize("version", ALL, ids=lambda v: v.identifier)
def test_top_level_keys(version: RoomVersion) -> None:
    redacted = redact(_event("m.room.message", {"body": "hi"}), version)
    common = {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
    }  # fmt: skip
    if version.identifier in ("11", "12"):
        assert set(redacted) == common
    else:
        assert set(redacted) == common | {"origin", "membership", "prev_state"}
    assert redacted["content"] == {}


@pytest.mark.parametrize("version", ALL, ids=lambda v: v.identifier)
def test_input_never_mutated_and_result_independent(version: RoomVersion) -> None:
    event = _event("m.room.power_levels", {"users": {"@u:x": 100}, "other": 1})
    before = copy.deepcopy(event)
    redacted = redact(event, version)
    assert event == before
    redacted["content"]["users"]["@v:x"] = 1
    redacted["prev_events"].append("$q")
    assert event == before


def test_shallow_mode_shares_nested_values() -> None:
    event = _event("m.room.message", {})
    assert redact(event, V["10"], copy=False)["prev_events"] is event["prev_events"]


def test_aliases_kept_only_before_v6() -> None:
    content = {"aliases": ["#a:x"], "other": 1}
    for number in ("1", "2", "3", "4", "5"):
        assert _content("m.room.aliases", content, V[number]) == {"aliases": ["#a:x"]}
    for number in ("6", "7", "8", "9", "10", "11", "12"):
        assert _content("m.room.aliases", content, V[number]) == {}


def test_join_rules_allow_kept_from_v8() -> None:
    content = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}
    for number in ("1", "6", "7"):
        assert _content("m.room.join_rules", content, V[number]) == {"join_rule": "restricted"}
    for number in ("8", "9", "10", "11", "12"):
        expected = {"join_rule": "restricted", "allow": content["allow"]}
        assert _content("m.room.join_rules", content, V[number]) == expected


def test_member_authoriser_kept_from_v9() -> None:
    content = {"membership": "join", "join_authorised_via_users_server": "@a:y", "name": "A"}
    for number in ("1", "6", "8"):
        assert _content("m.room.member", content, V[number]) == {"membership": "join"}
    for number in ("9", "10", "11", "12"):
        assert _content("m.room.member", content, V[number]) == {
            "membership": "join",
            "join_authorised_via_users_server": "@a:y",
        }


def test_member_third_party_invite_signed_kept_from_v11() -> None:
    invite = {"display_name": "b", "signed": {"mxid": "@b:x", "token": "t"}}
    content = {"membership": "invite", "third_party_invite": invite}
    assert _content("m.room.member", content, V["10"]) == {"membership": "invite"}
    for number in ("11", "12"):
        assert _content("m.room.member", content, V[number]) == {
            "membership": "invite",
            "third_party_invite": {"signed": invite["signed"]},
        }
    odd = {"membership": "invite", "third_party_invite": "not an object"}
    assert _content("m.room.member", odd, V["11"]) == {"membership": "invite"}


def test_create_keeps_creator_then_everything_from_v11() -> None:
    content = {"creator": "@u:x", "room_version": "9", "m.federate": False}
    for number in ("1", "6", "10"):
        assert _content("m.room.create", content, V[number]) == {"creator": "@u:x"}
    for number in ("11", "12"):
        assert _content("m.room.create", content, V[number]) == content


def test_power_levels_invite_kept_from_v11() -> None:
    content = {
        "ban": 50, "events": {}, "events_default": 0, "kick": 50, "redact": 50,
        "state_default": 50, "users": {}, "users_default": 0, "invite": 0,
        "notifications": {"room": 50}, "historical": 100,
    }  # fmt: skip
    old = {k: v for k, v in content.items() if k not in ("invite", "notifications", "historical")}
    for number in ("1", "6", "10"):
        assert _content("m.room.power_levels", content, V[number]) == old
    for number in ("11", "12"):
        assert _content("m.room.power_levels", content, V[number]) == {**old, "invite": 0}


def test_redaction_redacts_kept_in_content_from_v11() -> None:
    event = _event("m.room.redaction", {"redacts": "$t", "reason": "spam"}, redacts="$t")
    old = redact(event, V["10"])
    assert "redacts" not in old and old["content"] == {}
    new = redact(event, V["11"])
    assert "redacts" not in new and new["content"] == {"redacts": "$t"}


def test_history_visibility_kept_everywhere() -> None:
    for version in ALL:
        content = {"history_visibility": "shared", "x": 1}
        assert _content("m.room.history_visibility", content, version) == {
            "history_visibility": "shared"
        }


@pytest.mark.parametrize("version", ALL, ids=lambda v: v.identifier)
@pytest.mark.parametrize("content", [None, "x", [1], 5])
def test_hostile_content_and_type(version: RoomVersion, content: Any) -> None:
    assert redact(_event("m.room.member", content), version)["content"] == {}
    assert redact(_event(["m.room.member"], {"membership": "join"}), version)["content"] == {}
    assert redact({}, version) == {"content": {}}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)
_TYPES = st.sampled_from(
    ["m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
     "m.room.aliases", "m.room.history_visibility", "m.room.redaction", "m.room.message"]
)  # fmt: skip


@given(st.sampled_from(ALL), _TYPES, st.dictionaries(st.text(max_size=40), _json, max_size=6))
def test_redaction_is_idempotent(version: RoomVersion, event_type: str, content: Any) -> None:
    event = _event(event_type, content)
    once = redact(event, version)
    assert redact(once, version) == once
    assert set(once["content"]) <= set(content)
