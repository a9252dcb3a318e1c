"""Push rule evaluation: which actions a user's rules give an event.

Pure: no database, no network. The caller hands in the event (as a dict in the
shape the spec's conditions address: `type`, `sender`, `content`, ...), the user's
rules already in priority order, and the few facts about the room that conditions
read. Kept pure so every condition kind and the default rule set are unit-tested
without a server, and so evaluation on the send path costs only Python time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from homeserver.services.push.members import Folded, Member, Which, index_of

Rule = Mapping[str, Any]
"""A push rule as served to clients: rule_id, enabled, actions, conditions or pattern."""

KINDS = ("override", "content", "postcontent", "room", "sender", "underride")
"""Rule kinds, most important first. `postcontent` (MSC4306, as Synapse has it) holds
server-default rules only: clients read and toggle them, never add their own."""

DEFAULT_NOTIFICATION_LEVEL = 50

# The deprecated body-matching mention rules: the spec says they must not match an
# event that uses intentional mentions (has an `m.mentions` property).
LEGACY_MENTION_RULES = frozenset(
    {".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"}
)

_WORD = "A-Za-z0-9_"


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What conditions read about the room and the user the event is evaluated for."""

    member_count: int
    display_name: str | None = None
    sender_power: float = 0
    notification_levels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The matching rule's actions, and what they mean for counts and pushes."""

    rule_id: str
    actions: Sequence[Any]
    notify: bool
    highlight: bool
    sound: str | None


def split_key(key: str) -> list[str]:
    """A dotted property path into its parts; `\\.` is a literal dot, `\\\\` a backslash."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


_MISSING = object()


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted path of the event, or _MISSING."""
    value: Any = event
    for part in split_key(key):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


@lru_cache(maxsize=4096)
def _glob(pattern: str, words: bool) -> re.Pattern[str]:
    """A case-insensitive regex for a glob (`*` any run, `?` one character): the whole
    value, or with `words` anywhere between word boundaries."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        return re.compile(f"(?<![{_WORD}]){body}(?![{_WORD}])", re.IGNORECASE | re.DOTALL)
    return re.compile(f"{body}\\Z", re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, *, words: bool = False) -> bool:
    regex = _glob(pattern, words)
    return (regex.search(value) if words else regex.match(value)) is not None


def _same_value(a: Any, b: Any) -> bool:
    """Equality of non-compound JSON values, where true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return False


_COUNT = re.compile(r"\A(==|<=|>=|<|>)?([0-9]+)\Z")


def member_count_matches(is_: Any, count: int) -> bool:
    """`room_member_count`'s `is`: a number with an optional ==, <, >, <= or >= prefix."""
    if not isinstance(is_, str):
        return False
    found = _COUNT.match(is_)
    if found is None:
        return False
    op, number = found.group(1) or "==", int(found.group(2))
    return {
        "==": count == number,
        "<": count < number,
        ">": count > number,
        "<=": count <= number,
        ">=": count >= number,
    }[op]


def _contains_display_name(event: Mapping[str, Any], name: str | None) -> bool:
    body = lookup(event, "content.body")
    if not name or not isinstance(body, str):
        return False
    pattern = f"(?<![{_WORD}]){re.escape(name)}(?![{_WORD}])"
    return re.search(pattern, body, re.IGNORECASE) is not None


Predicate = Callable[[Mapping[str, Any], RoomFacts], bool]


def _never(event: Mapping[str, Any], facts: RoomFacts) -> bool:
    return False


def _lookup_path(event: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def compile_condition(condition: Any) -> Predicate:
    """One condition as a predicate; unknown kinds and malformed conditions match
    nothing (spec). Keys are split and globs compiled once, not per event."""
    if not isinstance(condition, Mapping):
        return _never
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "event_match":
        pattern = condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return _never
        path = split_key(key)
        words = key == "content.body"
        regex = _glob(pattern, words)
        find = regex.search if words else regex.match

        def event_match(event: Mapping[str, Any], facts: RoomFacts) -> bool:
            value = _lookup_path(event, path)
            return isinstance(value, str) and find(value) is not None

        return event_match
    if kind in ("event_property_is", "event_property_contains"):
        if not isinstance(key, str) or "value" not in condition:
            return _never
        path = split_key(key)
        wanted = condition["value"]
        if kind == "event_property_is":

            def property_is(event: Mapping[str, Any], facts: RoomFacts) -> bool:
                value = _lookup_path(event, path)
                return value is not _MISSING and _same_value(value, wanted)

            return property_is

        def property_contains(event: Mapping[str, Any], facts: RoomFacts) -> bool:
            value = _lookup_path(event, path)
            return isinstance(value, list) and any(_same_value(v, wanted) for v in value)

        return property_contains
    if kind == "contains_display_name":
        return lambda event, facts: _contains_display_name(event, facts.display_name)
    if kind == "room_member_count":
        is_ = condition.get("is")
        return lambda event, facts: member_count_matches(is_, facts.member_count)
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return _never

        def permitted(event: Mapping[str, Any], facts: RoomFacts) -> bool:
            level = facts.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
            if isinstance(level, bool) or not isinstance(level, int | float):
                level = DEFAULT_NOTIFICATION_LEVEL
            return facts.sender_power >= level

        return permitted
    return _never


def condition_matches(condition: Any, event: Mapping[str, Any], facts: RoomFacts) -> bool:
    return compile_condition(condition)(event, facts)


def rule_conditions(kind: str, rule: Rule) -> list[Any]:
    """The conditions a rule of this kind stands for: content rules match their
    pattern on the body, room and sender rules their id."""
    if kind == "content":
        pattern = rule.get("pattern")
        return [{"kind": "event_match", "key": "content.body", "pattern": pattern}]
    if kind == "room":
        return [{"kind": "event_match", "key": "room_id", "pattern": rule.get("rule_id")}]
    if kind == "sender":
        return [{"kind": "event_match", "key": "sender", "pattern": rule.get("rule_id")}]
    conditions = rule.get("conditions", [])
    return list(conditions) if isinstance(conditions, list) else [{"kind": "malformed"}]


def ordered_rules(ruleset: Mapping[str, Sequence[Rule]]) -> list[tuple[str, Rule]]:
    """Every rule of a ruleset with its kind, in the order they are tried."""
    return [(kind, rule) for kind in KINDS for rule in ruleset.get(kind, ())]


def outcome_of(rule_id: str, actions: Sequence[Any]) -> Outcome:
    notify = False
    highlight = False
    sound: str | None = None
    for action in actions:
        if action in ("notify", "coalesce"):
            notify = True
        elif isinstance(action, Mapping):
            tweak = action.get("set_tweak")
            if tweak == "highlight":
                highlight = action.get("value", True) is True
            elif tweak == "sound" and isinstance(action.get("value"), str):
                sound = action["value"]
    return Outcome(rule_id, actions, notify, highlight and notify, sound)


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    legacy: bool
    predicates: tuple[Predicate, ...]
    outcome: Outcome


class CompiledRules:
    """A user's enabled rules, compiled once, tried in order for each event."""

    def __init__(self, ruleset: Mapping[str, Sequence[Rule]]) -> None:
        self._rules: list[_CompiledRule] = []
        for kind, rule in ordered_rules(ruleset):
            if not rule.get("enabled", True):
                continue
            rule_id = str(rule.get("rule_id", ""))
            actions = rule.get("actions", [])
            self._rules.append(
                _CompiledRule(
                    legacy=rule_id in LEGACY_MENTION_RULES,
                    predicates=tuple(compile_condition(c) for c in rule_conditions(kind, rule)),
                    outcome=outcome_of(rule_id, actions if isinstance(actions, list) else []),
                )
            )

    def evaluate(self, event: Mapping[str, Any], facts: RoomFacts) -> Outcome | None:
        """The outcome of the first rule whose conditions all hold; None if none."""
        content = event.get("content")
        intentional = isinstance(content, Mapping) and "m.mentions" in content
        for rule in self._rules:
            if intentional and rule.legacy:
                continue
            if all(p(event, facts) for p in rule.predicates):
                return rule.outcome
        return None


def evaluate(
    ruleset: Mapping[str, Sequence[Rule]], event: Mapping[str, Any], facts: RoomFacts
) -> Outcome | None:
    """Evaluate a ruleset once (callers that evaluate often keep a CompiledRules)."""
    return CompiledRules(ruleset).evaluate(event, facts)


# -- shared evaluation ------------------------------------------------------------------
#
# Most users' rules are the server defaults, which differ from one user to another only
# in the user's id (mentions, invites), localpart (the user-name content rule) and, in
# the display-name condition, the display name. `SharedRules` compiles such a ruleset
# once, with those three as parameters, and evaluates an event for many users at once:
# conditions that do not depend on the user are tried once per event, and only the few
# that do are tried per user, most often through a set lookup or a substring search.

# Non-ASCII characters that case-insensitive matching (Python's `re`) takes as equal to
# an ASCII letter; every other non-ASCII character becomes '?' in `fold`.
Selector = Callable[[Mapping[str, Any], list[Member], Folded], list[Member]]
"""A user-dependent condition: which of the candidate members it holds for."""


def _param(member: Member, which: str) -> str:
    return member.user_id if which == "user_id" else member.localpart


def _user_match(path: Sequence[str], words: bool, which: Which) -> Selector:
    """event_match whose pattern is the user's id or localpart. Members whose pattern
    is literal and absent from the folded text (nearly all, in a big room) are ruled
    out without the regex: over a whole member list through an index of it, else by
    a substring test each."""
    by_id = which == "user_id"

    def select(event: Mapping[str, Any], members: list[Member], folded: Folded) -> list[Member]:
        value = _lookup_path(event, path)
        if not isinstance(value, str):
            return []
        group = folded.group
        if len(members) == len(group) > 1 and (not words or value.isascii()):
            # `members` is a sub-list of `group` in its order: of equal length, the same.
            candidates = index_of(group, which).candidates(value, folded, words)
            return [m for m in candidates if glob_matches(_param(m, which), value, words=words)]
        folded_value = folded(value)
        out: list[Member] = []
        for member in members:
            if by_id:
                pattern, key, literal = (
                    member.user_id,
                    member.folded_user_id,
                    member.literal_user_id,
                )
            else:
                pattern, key = member.localpart, member.folded_localpart
                literal = member.literal_localpart
            if literal and ((key not in folded_value) if words else (key != folded_value)):
                continue
            if glob_matches(pattern, value, words=words):
                out.append(member)
        return out

    return select


def _user_property(path: Sequence[str], which: str, contains: bool) -> Selector:
    """event_property_is/contains whose value is the user's id or localpart: a string
    equal to it (`_same_value` of two strings is plain equality)."""

    def select(event: Mapping[str, Any], members: list[Member], folded: Folded) -> list[Member]:
        value = _lookup_path(event, path)
        if contains:
            if not isinstance(value, list):
                return []
            wanted = {v for v in value if isinstance(v, str)}
        elif isinstance(value, str):
            wanted = {value}
        else:
            return []
        if not wanted:
            return []
        return [m for m in members if _param(m, which) in wanted]

    return select


def _display_name(event: Mapping[str, Any], members: list[Member], folded: Folded) -> list[Member]:
    body = lookup(event, "content.body")
    if not isinstance(body, str):
        return []
    group = folded.group
    if len(members) == len(group) > 1 and body.isascii():
        # `members` is a sub-list of `group` in its order: of equal length, the same.
        candidates = index_of(group, "name").candidates(body, folded, True)
        return [m for m in candidates if _contains_display_name(event, m.display_name)]
    folded_body = folded(body)
    return [
        m
        for m in members
        if m.display_name
        and m.folded_name in folded_body
        and _contains_display_name(event, m.display_name)
    ]


def _selector(condition: Any, user_id: str, localpart: str) -> Selector | None:
    """The condition as a selector when it depends on the user (compiled for the
    placeholder user `user_id`), else None."""
    if not isinstance(condition, Mapping):
        return None
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "contains_display_name":
        return _display_name
    if not isinstance(key, str):
        return None
    params: dict[str, Which] = {user_id: "user_id", localpart: "localpart"}
    if kind == "event_match":
        pattern = condition.get("pattern")
        if isinstance(pattern, str) and pattern in params:
            return _user_match(split_key(key), key == "content.body", params[pattern])
    elif kind in ("event_property_is", "event_property_contains"):
        value = condition.get("value")
        if isinstance(value, str) and value in params:
            contains = kind == "event_property_contains"
            return _user_property(split_key(key), params[value], contains)
    return None


@dataclass(frozen=True, slots=True)
class _SharedRule:
    legacy: bool
    predicates: tuple[Predicate, ...]  # the user-independent conditions
    selectors: tuple[Selector, ...]  # the user-dependent ones
    outcome: Outcome


class SharedRules:
    """A ruleset shared by a group of users, compiled once.

    Built from the ruleset as merged for a placeholder user: conditions naming the
    placeholder's id or localpart, and display-name conditions, become per-user
    selectors. Evaluating an event for a member then gives exactly what the member's
    own `CompiledRules` would give, provided the member's ruleset is this one with the
    placeholder's id and localpart replaced by the member's (the push rules service
    groups users so that this holds: same stored rules, defaults for the rest).
    """

    def __init__(self, ruleset: Mapping[str, Sequence[Rule]], user_id: str, localpart: str):
        self._rules: list[_SharedRule] = []
        for kind, rule in ordered_rules(ruleset):
            if not rule.get("enabled", True):
                continue
            rule_id = str(rule.get("rule_id", ""))
            actions = rule.get("actions", [])
            predicates: list[Predicate] = []
            selectors: list[Selector] = []
            for condition in rule_conditions(kind, rule):
                selector = _selector(condition, user_id, localpart)
                if selector is None:
                    predicates.append(compile_condition(condition))
                else:
                    selectors.append(selector)
            self._rules.append(
                _SharedRule(
                    legacy=rule_id in LEGACY_MENTION_RULES,
                    predicates=tuple(predicates),
                    selectors=tuple(selectors),
                    outcome=outcome_of(rule_id, actions if isinstance(actions, list) else []),
                )
            )

    def evaluate_groups(
        self, event: Mapping[str, Any], facts: RoomFacts, members: Sequence[Member]
    ) -> list[tuple[Outcome, list[Member]]]:
        """The members by outcome (members no rule matched are left out), trying rule
        after rule with the members still undecided: in a big room most members fall
        to one rule together, one list and no per-member work. `facts.display_name`
        is not read: each member's own is."""
        content = event.get("content")
        intentional = isinstance(content, Mapping) and "m.mentions" in content
        undecided = list(members)
        out: list[tuple[Outcome, list[Member]]] = []
        folded = Folded(members)
        for rule in self._rules:
            if not undecided:
                break
            if intentional and rule.legacy:
                continue
            if not all(p(event, facts) for p in rule.predicates):
                continue
            if not rule.selectors:
                out.append((rule.outcome, undecided))
                break
            matched = undecided
            for selector in rule.selectors:
                matched = selector(event, matched, folded)
                if not matched:
                    break
            if matched:
                out.append((rule.outcome, matched))
                taken = {id(m) for m in matched}
                undecided = [m for m in undecided if id(m) not in taken]
        return out
