"""Parsing filters and matching events against them."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.services.accounts.filters import (
    EventFilter,
    Filter,
    RoomEventFilter,
    TypeSet,
    only_fields,
    parse_field_path,
    parse_filter,
    wildcard_match,
)
from homeserver.services.core.errors import ServiceError


def _event(type_: str = "m.room.message", sender: str = "@a:x", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "sender": sender, "content": {}, **extra}


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("m.room.message", "m.room.message", True),
        ("m.room.message", "m.room.messages", False),
        ("*", "", True),
        ("*", "anything", True),
        ("m.*", "m.room.member", True),
        ("m.*", "org.m.x", False),
        ("*.member", "m.room.member", True),
        ("m.*.member", "m.room.member", True),
        ("m.*.member", "m.member", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),  # prefix and suffix may not overlap
        ("**", "x", True),
        ("m.room.*", "m.room.", True),
    ],
)
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


def test_wildcards_do_not_backtrack() -> None:
    pattern = "*a" * 50 + "*b"
    assert not wildcard_match(pattern, "a" * 10_000)


def test_empty_filter_matches_everything() -> None:
    parsed = parse_filter({})
    assert parsed == Filter()
    assert parsed.room.timeline.matches(_event())
    assert parsed.room.matches_room("!r:x")
    assert parsed.presence.matches({"type": "m.presence", "sender": "@a:x"})
    assert parsed.event_format == "client" and parsed.event_fields is None


def test_types_and_not_types() -> None:
    parsed = parse_filter(
        {"room": {"timeline": {"types": ["m.room.*", "org.example"], "not_types": ["*.member"]}}}
    )
    timeline = parsed.room.timeline
    assert timeline.matches(_event("m.room.message"))
    assert timeline.matches(_event("org.example"))
    assert not timeline.matches(_event("m.room.member"))  # exclusion wins
    assert not timeline.matches(_event("org.example.other"))
    assert not timeline.matches({"sender": "@a:x"})  # no type, nothing to include


def test_empty_types_match_nothing() -> None:
    assert not parse_filter({"presence": {"types": []}}).presence.matches(_event())


def test_senders() -> None:
    event_filter = parse_filter(
        {"account_data": {"senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"]}}
    ).account_data
    assert event_filter.matches(_event(sender="@a:x"))
    assert not event_filter.matches(_event(sender="@b:x"))
    assert not event_filter.matches(_event(sender="@c:x"))
    # Account data has no sender: the sender lists do not judge it.
    assert event_filter.matches({"type": "m.direct", "content": {}})


def test_rooms() -> None:
    parsed = parse_filter(
        {
            "room": {
                "rooms": ["!a:x", "!b:x"],
                "not_rooms": ["!b:x"],
                "state": {"not_rooms": ["!a:x"]},
                "timeline": {"rooms": ["!c:x"]},
            }
        }
    )
    assert parsed.room.matches_room("!a:x")
    assert not parsed.room.matches_room("!b:x")
    assert not parsed.room.matches_room("!c:x")
    assert not parsed.room.state.matches(_event(room_id="!a:x"))
    assert parsed.room.state.matches(_event(room_id="!z:x"))
    assert parsed.room.timeline.matches(_event(room_id="!c:x"))
    assert not parsed.room.timeline.matches(_event(room_id="!a:x"))
    assert parsed.room.timeline.matches(_event())  # no room id, not judged by room


def test_contains_url() -> None:
    with_url = _event(content={"url": "mxc://x/y", "body": "pic"})
    without = _event(content={"body": "text"})
    only_urls = RoomEventFilter(contains_url=True)
    no_urls = RoomEventFilter(contains_url=False)
    either = RoomEventFilter()
    assert only_urls.matches(with_url) and not only_urls.matches(without)
    assert no_urls.matches(without) and not no_urls.matches(with_url)
    assert either.matches(with_url) and either.matches(without)
    assert not only_urls.matches(_event(content="not an object"))


def test_room_event_filter_flags_and_limits() -> None:
    parsed = parse_filter(
        {
            "room": {
                "include_leave": True,
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "timeline": {"limit": 20, "unread_thread_notifications": True},
                "ephemeral": {"limit": 5},
            },
            "event_fields": ["content.body"],
            "event_format": "federation",
        }
    )
    assert parsed.room.include_leave
    assert parsed.room.state.lazy_load_members and parsed.room.state.include_redundant_members
    assert not parsed.room.timeline.lazy_load_members
    assert parsed.room.timeline.limit == 20 and parsed.room.timeline.unread_thread_notifications
    assert parsed.room.ephemeral.limit == 5 and parsed.room.account_data.limit is None
    assert parsed.event_fields == ("content.body",)
    assert parsed.event_format == "federation"


def test_dataclasses_can_be_built_directly() -> None:
    event_filter = EventFilter(types=TypeSet.of(["m.*"]), not_senders=frozenset({"@x:y"}))
    assert event_filter.matches(_event("m.typing"))
    assert not event_filter.matches(_event("m.typing", sender="@x:y"))


@pytest.mark.parametrize(
    "definition",
    [
        None,
        [],
        {"room": "x"},
        {"room": {"timeline": []}},
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"timeline": {"limit": 1.5}}},
        {"room": {"not_rooms": "!a:x"}},
        {"room": {"state": {"senders": ["a:x"]}}},
        {"presence": {"not_types": [None]}},
        {"event_format": None},
        {"event_fields": [1]},
    ],
)
def test_malformed(definition: Any) -> None:
    with pytest.raises(ServiceError) as info:
        parse_filter(definition)
    assert (info.value.status, info.value.errcode) == (400, "M_BAD_JSON")


def test_field_paths_and_projection() -> None:
    assert parse_field_path("content.body") == ("content", "body")
    assert parse_field_path("content.m\\.relates_to") == ("content", "m.relates_to")
    assert parse_field_path("a\\\\.b") == ("a\\", "b")
    event = {"type": "t", "content": {"body": "b", "m.x": {"y": 1}, "n": 2}, "depth": 3}
    paths = [parse_field_path(p) for p in ("content.m\\.x.y", "type", "missing.deep", "depth.x")]
    assert only_fields(event, paths) == {"content": {"m.x": {"y": 1}}, "type": "t"}
    # A whole object then a path into it: the event given is left unchanged.
    both = only_fields(event, [("content",), ("content", "body")])
    assert both == {"content": event["content"]}
    assert event["content"] == {"body": "b", "m.x": {"y": 1}, "n": 2}
    with pytest.raises(ServiceError):
        parse_filter({"event_fields": ["a..b"]})
