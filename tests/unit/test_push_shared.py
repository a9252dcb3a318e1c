"""Shared push evaluation (`SharedRules.evaluate_groups`, what the send path runs) gives
every user exactly what evaluating their own merged ruleset alone gives: random
events, users, display names, mentions, power levels and stored rules."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.services.push.defaults import localpart_of
from homeserver.services.push.evaluator import CompiledRules, Outcome, RoomFacts, glob_matches
from homeserver.services.push.members import Member, fold
from homeserver.services.push.rules import fingerprint, merge, shared_rules
from homeserver.storage.push.rules import PushRuleRow

ROOM = "!room:example.org"
# Localparts and names with what makes matching hard: glob characters, case, word
# boundaries, and the non-ASCII letters `re` takes as equal to ASCII ones.
LOCALPARTS = ["alice", "Bob", "al", "a*e", "b?b", "kim", "\u017fam", "\u0130rem", "x.y", "_u_"]
DOMAINS = ["example.org", "Example.org", "other.net"]
NAMES = [None, "", "Alice", "alice liddell", "K", "@room", "Bob!", "\u212aim", "al*", "名前", "x.y"]
WORDS = ["hello", "@room", "cake", "lie", "!", " ", ", ", "名前", "ALICE", "\u0131", "*"]

user_ids = st.builds(
    lambda lp, d: f"@{lp}:{d}", st.sampled_from(LOCALPARTS), st.sampled_from(DOMAINS)
)


def _row(user_id: str, kind: str, rule_id: str, **fields: Any) -> PushRuleRow:
    return PushRuleRow(
        user_id,
        kind,
        rule_id,
        fields.get("is_default", False),
        fields.get("priority", 0),
        fields.get("conditions"),
        fields.get("pattern"),
        fields.get("actions"),
        fields.get("enabled"),
    )


HIGHLIGHT = {"set_tweak": "highlight"}


def _stored_sets(user_id: str) -> list[list[PushRuleRow]]:
    """Stored rows a user may have: a few shapes, some naming users literally."""
    return [
        [],
        [_row(user_id, "room", ROOM, actions=["dont_notify"])],
        [_row(user_id, "sender", "@Bob:example.org", actions=["notify", HIGHLIGHT])],
        [_row(user_id, "content", "cakes", pattern="cake*", actions=["notify"])],
        [_row(user_id, "content", "mine", pattern="alice", actions=["notify", HIGHLIGHT])],
        [
            _row(
                user_id,
                "override",
                "named",
                conditions=[
                    {"kind": "contains_display_name"},
                    {"kind": "room_member_count", "is": ">2"},
                ],
                actions=["notify", HIGHLIGHT],
            )
        ],
        [
            _row(
                user_id,
                "override",
                "invited_alice",
                conditions=[
                    {"kind": "event_match", "key": "state_key", "pattern": "@alice:example.org"}
                ],
                actions=["notify"],
            )
        ],
        [
            _row(
                user_id,
                "underride",
                ".m.rule.message",
                is_default=True,
                enabled=False,
            )
        ],
        [
            _row(
                user_id,
                "content",
                ".m.rule.contains_user_name",
                is_default=True,
                actions=["dont_notify"],
            )
        ],
        [_row(user_id, "override", ".m.rule.master", is_default=True, enabled=True)],
        [
            _row(user_id, "override", ".m.rule.is_user_mention", is_default=True, enabled=False),
            _row(
                user_id,
                "underride",
                "pl",
                conditions=[{"kind": "sender_notification_permission", "key": "room"}],
                actions=["notify", {"set_tweak": "sound", "value": "x"}],
            ),
        ],
    ]


@st.composite
def bodies(draw: st.DrawFn, people: list[tuple[str, str | None]]) -> str:
    parts: list[str] = []
    pool = WORDS + [u for u, _ in people] + [localpart_of(u) for u, _ in people]
    pool += [n for _, n in people if n]
    for piece in draw(st.lists(st.sampled_from(pool), max_size=6)):
        case = draw(st.sampled_from(["same", "upper", "lower", "glued"]))
        if case == "upper":
            piece = piece.upper()
        elif case == "lower":
            piece = piece.lower()
        elif case == "glued":
            piece = "x" + piece
        parts.append(piece)
    return draw(st.sampled_from([" ", "", ": "])).join(parts)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[str, Any], RoomFacts, list[tuple[str, str | None, int]]]:
    ids = draw(st.lists(user_ids, min_size=1, max_size=8, unique=True))
    people = [(u, draw(st.sampled_from(NAMES))) for u in ids]
    users = [(u, name, draw(st.integers(0, len(_stored_sets(u)) - 1))) for u, name in people]
    sender = draw(st.sampled_from([*ids, "@Bob:example.org", "@eve:other.net"]))
    event_type = draw(
        st.sampled_from(
            [
                "m.room.message",
                "m.room.member",
                "m.room.encrypted",
                "m.reaction",
                "m.call.invite",
                "m.room.tombstone",
                "m.room.server_acl",
                "org.custom",
            ]
        )
    )
    content: dict[str, Any] = {}
    if draw(st.booleans()):
        content["body"] = draw(bodies(people))
    if draw(st.booleans()):
        content["msgtype"] = draw(st.sampled_from(["m.text", "m.notice"]))
    if draw(st.booleans()):
        mentions: dict[str, Any] = {}
        if draw(st.booleans()):
            mentions["user_ids"] = draw(
                st.lists(
                    st.one_of(st.sampled_from(ids), user_ids, st.just(1), st.just(True)), max_size=3
                )
            )
        if draw(st.booleans()):
            mentions["room"] = draw(st.sampled_from([True, False, 1, "true"]))
        content["m.mentions"] = mentions
    if draw(st.booleans()):
        content["m.relates_to"] = {
            "rel_type": draw(st.sampled_from(["m.replace", "m.thread", "m.annotation"])),
            "event_id": "$x",
        }
    event: dict[str, Any] = {"type": event_type, "room_id": ROOM, "sender": sender}
    if event_type == "m.room.member" or draw(st.booleans()):
        event["state_key"] = draw(st.sampled_from([*ids, "", "@alice:example.org"]))
        if event_type == "m.room.member":
            content["membership"] = draw(st.sampled_from(["invite", "join", "leave"]))
    event["content"] = content
    level = draw(st.sampled_from([None, 0, 50, 100, "x", True]))
    facts = RoomFacts(
        member_count=draw(st.integers(1, 5)),
        sender_power=draw(st.sampled_from([0, 50, 100])),
        notification_levels={} if level is None else {"room": level},
    )
    return event, facts, users


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_shared_evaluation_equals_each_users_own(
    scenario: tuple[dict[str, Any], RoomFacts, list[tuple[str, str | None, int]]],
) -> None:
    event, facts, users = scenario
    expected: dict[str, Outcome | None] = {}
    groups: dict[Any, tuple[list[PushRuleRow], list[Member]]] = {}
    for user_id, name, which in users:
        rows = _stored_sets(user_id)[which]
        alone = RoomFacts(
            member_count=facts.member_count,
            display_name=name,
            sender_power=facts.sender_power,
            notification_levels=facts.notification_levels,
        )
        expected[user_id] = CompiledRules(merge(user_id, rows)).evaluate(event, alone)
        member = Member.of(user_id, localpart_of(user_id), name)
        groups.setdefault(fingerprint(rows), (rows, []))[1].append(member)
    got: dict[str, Outcome | None] = {u: None for u, _, _ in users}
    for rows, members in groups.values():
        for outcome, matched in shared_rules(rows).evaluate_groups(event, facts, members):
            for member in matched:
                assert got[member.user_id] is None, "two outcomes for one user"
                got[member.user_id] = outcome
    assert {u: o and o.rule_id for u, o in got.items()} == {
        u: o and o.rule_id for u, o in expected.items()
    }
    assert got == expected


def test_rows_of_different_users_share_a_fingerprint() -> None:
    a = _stored_sets("@a:x")[3]
    b = _stored_sets("@b:y")[3]
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(_stored_sets("@a:x")[2])


def test_fold_is_necessary_for_a_case_insensitive_match() -> None:
    """Every character `re` takes as equal to another folds to the same byte."""
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    ascii_class = re.compile("[\x00-\x7f]", re.IGNORECASE)
    twins = [c for c in everything[0x80:] if ascii_class.fullmatch(c)]
    for char in twins:
        for other in map(chr, range(0x80)):
            if re.fullmatch(re.escape(other), char, re.IGNORECASE):
                assert fold(char) == fold(other), (char, other)
    for twin in twins:
        same = re.compile(re.escape(twin), re.IGNORECASE)
        for char in everything:
            if same.fullmatch(char):
                assert fold(char) == fold(twin), (char, twin)
    for a in map(chr, range(0x80)):
        for b in map(chr, range(0x80)):
            if re.fullmatch(re.escape(a), b, re.IGNORECASE):
                assert fold(a) == fold(b)
    assert fold("\u212aim Liddell") == b"kim liddell" and fold("名前") == b"??"
    assert glob_matches("kim", "\u212aIM")
