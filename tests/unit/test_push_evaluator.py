"""Push rule evaluation: each condition kind, and what the spec's default rules do."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from homeserver.services.push.defaults import default_rules
from homeserver.services.push.evaluator import (
    CompiledRules,
    Outcome,
    RoomFacts,
    condition_matches,
    evaluate,
    glob_matches,
    member_count_matches,
    split_key,
)

ME = "@alice:example.org"
OTHER = "@bob:example.org"
ROOM = "!room:example.org"
GROUP = RoomFacts(member_count=5, display_name="Alice Liddell", sender_power=0)


def message(body: str, sender: str = OTHER, **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": sender,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def defaults(event: dict[str, Any], facts: RoomFacts = GROUP) -> Outcome | None:
    return evaluate(default_rules(ME), event, facts)


# -- event_match ---------------------------------------------------------------------


def test_event_match_whole_value_is_case_insensitive_glob() -> None:
    cond = {"kind": "event_match", "key": "type", "pattern": "m.room.*"}
    assert condition_matches(cond, {"type": "m.room.message"}, GROUP)
    assert condition_matches(cond, {"type": "M.ROOM.Message"}, GROUP)
    assert not condition_matches(cond, {"type": "m.reaction"}, GROUP)
    # Outside content.body the pattern must match the whole value.
    assert not condition_matches(
        {"kind": "event_match", "key": "type", "pattern": "room"}, {"type": "m.room.x"}, GROUP
    )
    assert glob_matches("m.?oom", "m.room")
    assert not glob_matches("m.?oom", "m.rooom")


def test_event_match_on_body_uses_word_boundaries() -> None:
    cond = {"kind": "event_match", "key": "content.body", "pattern": "cake*lie"}
    assert condition_matches(cond, message("the cake is a lie!"), GROUP)
    assert not condition_matches(cond, message("the cakes are lies"), GROUP)
    word = {"kind": "event_match", "key": "content.body", "pattern": "alice"}
    assert condition_matches(word, message("hi Alice, how are you"), GROUP)
    assert not condition_matches(word, message("malice aforethought"), GROUP)
    assert not condition_matches(word, message("alice_bot"), GROUP)


def test_event_match_needs_a_string_and_unknown_kinds_never_match() -> None:
    cond = {"kind": "event_match", "key": "content.n", "pattern": "1"}
    assert not condition_matches(cond, {"content": {"n": 1}}, GROUP)
    assert not condition_matches({"kind": "event_match", "key": "type"}, {"type": "x"}, GROUP)
    assert not condition_matches({"kind": "no_such_kind"}, message("x"), GROUP)
    assert not condition_matches("event_match", message("x"), GROUP)


def test_dotted_keys_allow_escaped_dots() -> None:
    assert split_key("content.m\\.relates_to.rel_type") == ["content", "m.relates_to", "rel_type"]
    assert split_key("a\\\\.b") == ["a\\", "b"]


# -- event_property_is / event_property_contains -------------------------------------


def test_event_property_is_compares_exact_values() -> None:
    def prop(value: Any) -> dict[str, Any]:
        return {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": value}

    event = message("x", **{"m.mentions": {"room": True}})
    assert condition_matches(prop(True), event, GROUP)
    assert not condition_matches(prop(1), event, GROUP)  # true is not 1
    assert not condition_matches(prop("true"), event, GROUP)
    assert condition_matches(
        {"kind": "event_property_is", "key": "content.x", "value": None},
        {"content": {"x": None}},
        GROUP,
    )
    assert not condition_matches(
        {"kind": "event_property_is", "key": "content.x", "value": None}, {"content": {}}, GROUP
    )


def test_event_property_contains_looks_in_arrays() -> None:
    cond = {"kind": "event_property_contains", "key": "content.tags", "value": "x"}
    assert condition_matches(cond, {"content": {"tags": ["a", "x"]}}, GROUP)
    assert not condition_matches(cond, {"content": {"tags": ["a"]}}, GROUP)
    assert not condition_matches(cond, {"content": {"tags": "x"}}, GROUP)


# -- contains_display_name, room_member_count, sender_notification_permission ---------


def test_contains_display_name() -> None:
    cond = {"kind": "contains_display_name"}
    assert condition_matches(cond, message("ping alice liddell!"), GROUP)
    assert not condition_matches(cond, message("ping alice liddells"), GROUP)
    nameless = RoomFacts(member_count=5, display_name=None)
    assert not condition_matches(cond, message("anything"), nameless)


@pytest.mark.parametrize(
    ("is_", "count", "expected"),
    [
        ("2", 2, True),
        ("==2", 3, False),
        ("<3", 2, True),
        ("<3", 3, False),
        (">3", 4, True),
        ("<=3", 3, True),
        (">=3", 2, False),
        ("x", 2, False),
        ("=2", 2, False),
    ],
)
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    assert member_count_matches(is_, count) is expected


def test_sender_notification_permission_reads_power_levels() -> None:
    cond = {"kind": "sender_notification_permission", "key": "room"}
    assert not condition_matches(cond, message("x"), RoomFacts(3, sender_power=0))
    assert condition_matches(cond, message("x"), RoomFacts(3, sender_power=50))
    lowered = RoomFacts(3, sender_power=10, notification_levels={"room": 10})
    assert condition_matches(cond, message("x"), lowered)


# -- actions ---------------------------------------------------------------------------


def test_actions_notify_tweaks_and_dont_notify() -> None:
    def ruleset(actions: list[Any]) -> dict[str, list[Any]]:
        return {
            "override": [{"rule_id": "r", "enabled": True, "conditions": [], "actions": actions}]
        }

    loud = evaluate(
        ruleset(["notify", {"set_tweak": "sound", "value": "x"}, {"set_tweak": "highlight"}]),
        message("x"),
        GROUP,
    )
    assert loud is not None and loud.notify and loud.highlight and loud.sound == "x"
    quiet = evaluate(ruleset(["dont_notify"]), message("x"), GROUP)
    assert quiet is not None and not quiet.notify
    coalesced = evaluate(ruleset(["coalesce"]), message("x"), GROUP)
    assert coalesced is not None and coalesced.notify
    not_high = evaluate(
        ruleset(["notify", {"set_tweak": "highlight", "value": False}]), message("x"), GROUP
    )
    assert not_high is not None and not not_high.highlight


def test_disabled_rules_are_skipped_and_order_is_by_kind() -> None:
    rules = {
        "underride": [{"rule_id": "u", "enabled": True, "conditions": [], "actions": ["notify"]}],
        "room": [{"rule_id": ROOM, "enabled": True, "actions": []}],
        "override": [{"rule_id": "o", "enabled": False, "conditions": [], "actions": ["notify"]}],
    }
    outcome = evaluate(rules, message("x"), GROUP)
    assert outcome is not None and outcome.rule_id == ROOM and not outcome.notify


def test_postcontent_rules_come_after_content_and_before_room_rules() -> None:
    always = {"enabled": True, "conditions": [], "actions": ["notify"]}
    rules = {
        "room": [{"rule_id": ROOM, "enabled": True, "actions": []}],
        "postcontent": [{"rule_id": "p", **always}],
        "content": [{"rule_id": "c", "enabled": True, "pattern": "nomatch", "actions": []}],
    }
    outcome = evaluate(rules, message("x"), GROUP)
    assert outcome is not None and outcome.rule_id == "p"
    rules["content"][0]["pattern"] = "x"
    outcome = evaluate(rules, message("x"), GROUP)
    assert outcome is not None and outcome.rule_id == "c"


# -- the default rules -----------------------------------------------------------------


def test_default_plain_message_in_a_group_notifies_without_sound() -> None:
    outcome = defaults(message("hello"))
    assert outcome is not None and outcome.rule_id == ".m.rule.message"
    assert outcome.notify and not outcome.highlight and outcome.sound is None


def test_default_one_to_one_message_notifies_with_sound() -> None:
    outcome = defaults(message("hello"), RoomFacts(member_count=2))
    assert outcome is not None and outcome.rule_id == ".m.rule.room_one_to_one"
    assert outcome.notify and outcome.sound == "default"
    encrypted = {"type": "m.room.encrypted", "sender": OTHER, "content": {"ciphertext": "x"}}
    outcome = defaults(encrypted, RoomFacts(member_count=2))
    assert outcome is not None and outcome.rule_id == ".m.rule.encrypted_room_one_to_one"


def test_default_user_mention_highlights() -> None:
    outcome = defaults(message("hey", **{"m.mentions": {"user_ids": [ME]}}))
    assert outcome is not None and outcome.rule_id == ".m.rule.is_user_mention"
    assert outcome.notify and outcome.highlight and outcome.sound == "default"


def test_default_legacy_mentions_highlight_only_without_m_mentions() -> None:
    by_name = defaults(message("Alice Liddell: look"))
    assert by_name is not None and by_name.highlight
    by_localpart = defaults(message("alice: look"))
    assert by_localpart is not None and by_localpart.rule_id == ".m.rule.contains_user_name"
    intentional = defaults(message("alice: look", **{"m.mentions": {}}))
    assert intentional is not None and not intentional.highlight


def test_default_room_mention_needs_the_senders_power() -> None:
    event = message("everyone!", **{"m.mentions": {"room": True}})
    weak = defaults(event, RoomFacts(member_count=5, sender_power=0))
    assert weak is not None and not weak.highlight
    strong = defaults(event, RoomFacts(member_count=5, sender_power=50))
    assert strong is not None and strong.rule_id == ".m.rule.is_room_mention" and strong.highlight
    legacy = defaults(message("@room look"), RoomFacts(member_count=5, sender_power=100))
    assert legacy is not None and legacy.rule_id == ".m.rule.roomnotif" and legacy.highlight


def test_default_notice_edit_reaction_and_member_events_do_not_notify() -> None:
    notice = defaults(message("bot says", msgtype="m.notice"))
    assert notice is not None and not notice.notify
    edit = defaults(
        message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    )
    assert edit is not None and edit.rule_id == ".m.rule.suppress_edits" and not edit.notify
    reaction = defaults({"type": "m.reaction", "sender": OTHER, "content": {}})
    assert reaction is not None and not reaction.notify
    join = defaults({"type": "m.room.member", "state_key": OTHER, "sender": OTHER, "content": {}})
    assert join is not None and not join.notify


def test_default_invite_for_me_and_tombstone_notify() -> None:
    invite = defaults(
        {
            "type": "m.room.member",
            "state_key": ME,
            "sender": OTHER,
            "content": {"membership": "invite"},
        }
    )
    assert invite is not None and invite.rule_id == ".m.rule.invite_for_me" and invite.notify
    tombstone = defaults(
        {"type": "m.room.tombstone", "state_key": "", "sender": OTHER, "content": {}}
    )
    assert tombstone is not None and tombstone.highlight


def test_default_master_rule_silences_everything_when_enabled() -> None:
    rules = default_rules(ME)
    rules["override"][0] = {**rules["override"][0], "enabled": True}
    outcome = CompiledRules(rules).evaluate(message("alice!"), GROUP)
    assert outcome is not None and outcome.rule_id == ".m.rule.master" and not outcome.notify


def test_default_rule_ids_are_the_specs() -> None:
    ids = {kind: [r["rule_id"] for r in rules] for kind, rules in default_rules(ME).items()}
    assert ids["override"][0] == ".m.rule.master"
    assert ids["override"][-1] == ".m.rule.suppress_edits"
    assert ids["content"] == [".m.rule.contains_user_name"]
    assert ids["underride"] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    assert default_rules(ME)["content"][0]["pattern"] == "alice"


def test_evaluator_is_pure() -> None:
    """No I/O and nothing from storage: it runs inside the send transaction on data
    handed to it, and is tested without a server."""
    root = Path(__file__).resolve().parents[2] / "homeserver" / "services" / "push"
    for name in ("evaluator.py", "defaults.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert all(
            m.startswith(
                (
                    "__future__",
                    "collections",
                    "dataclasses",
                    "federation.types",  # the JSON object alias, pure like federation/
                    "functools",
                    "re",
                    "typing",
                    "homeserver.services.push.",
                )
            )
            for m in imported
        ), imported
