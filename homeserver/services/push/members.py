"""The member side of shared push evaluation: each member's facts folded once, and an
index of a member list by folded id or localpart, so that an event is matched against
a big room's members in steps per word of the event rather than per member.

`fold` is coarse on purpose: a necessary test before the exact regex, never a match
on its own.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

_ASCII_TWINS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def fold(text: str) -> bytes:
    """A coarse case-folding, one byte per character, such that whenever `re` with
    IGNORECASE matches a literal at some position of `text`, the folded literal occurs
    at that position of the folded text: a cheap necessary test before the regex."""
    return text.translate(_ASCII_TWINS).encode("ascii", "replace").lower()


def is_literal(pattern: str) -> bool:
    return "*" not in pattern and "?" not in pattern


@dataclass(frozen=True, slots=True)
class Member:
    """The per-user facts of shared evaluation, folded once (kept per room member)."""

    user_id: str
    localpart: str
    display_name: str | None
    folded_user_id: bytes
    folded_localpart: bytes
    folded_name: bytes
    # Whether the id and the localpart are free of glob characters: then a pattern
    # naming them matches only where the folded text holds them.
    literal_user_id: bool
    literal_localpart: bool

    @classmethod
    def of(cls, user_id: str, localpart: str, display_name: str | None) -> Member:
        return cls(
            user_id,
            localpart,
            display_name,
            fold(user_id),
            fold(localpart),
            fold(display_name) if display_name else b"",
            is_literal(user_id),
            is_literal(localpart),
        )


class Folded:
    """Folded event strings, computed at most once per event; `group` is the full
    member list of the evaluation (selectors see sub-lists of it, in its order)."""

    __slots__ = ("_cache", "_runs", "group")

    def __init__(self, group: Sequence[Member] = ()) -> None:
        self._cache: dict[int, bytes] = {}
        self._runs: dict[int, set[bytes]] = {}
        self.group = group

    def __call__(self, value: str) -> bytes:
        found = self._cache.get(id(value))
        if found is None:
            found = self._cache[id(value)] = fold(value)
        return found

    def runs(self, value: str) -> set[bytes]:
        """The maximal runs of word characters of the folded value."""
        found = self._runs.get(id(value))
        if found is None:
            found = self._runs[id(value)] = set(_WORD_RUN.findall(self(value)))
        return found


_WORD_RUN = re.compile(rb"[a-z0-9_]+")
_WORD_KEY = re.compile(rb"[a-z0-9_]+\Z")
INDEXED_GROUPS = 256
Which = Literal["user_id", "localpart", "name"]


def _key_of(member: Member, which: Which) -> tuple[bytes, bool] | None:
    """The member's folded key and whether its pattern is literal; None: never matches."""
    if which == "user_id":
        return member.folded_user_id, member.literal_user_id
    if which == "localpart":
        return member.folded_localpart, member.literal_localpart
    return (member.folded_name, True) if member.display_name else None


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """A member list's positions by folded id, localpart or display name, so that a
    selector finds the few members an event can name without a step per member."""

    group: Sequence[Member]
    by_key: dict[bytes, list[int]]  # literal patterns
    non_word: list[tuple[int, bytes]]  # literal patterns with a non-[a-z0-9_] character
    globs: list[int]  # patterns with glob characters: always tried

    @classmethod
    def of(cls, group: Sequence[Member], which: Which) -> KeyIndex:
        by_key: dict[bytes, list[int]] = {}
        non_word: list[tuple[int, bytes]] = []
        globs: list[int] = []
        for position, member in enumerate(group):
            found = _key_of(member, which)
            if found is None:
                continue
            key, literal = found
            if not literal:
                globs.append(position)
                continue
            by_key.setdefault(key, []).append(position)
            if _WORD_KEY.match(key) is None:
                non_word.append((position, key))
        return cls(group, by_key, non_word, globs)

    def candidates(self, value: str, folded: Folded, words: bool) -> list[Member]:
        """The members whose pattern may match `value` (the caller runs the exact test):
        on an ASCII value, a word-bounded match of a key of word characters is a whole
        run of them in the folded value."""
        folded_value = folded(value)
        if not words:
            positions = self.by_key.get(folded_value, []) + self.globs
        else:
            positions = [p for run in folded.runs(value) for p in self.by_key.get(run, ())]
            positions += [p for p, key in self.non_word if key in folded_value]
            positions += self.globs
        return [self.group[p] for p in sorted(set(positions))]


_indexes: OrderedDict[tuple[int, str], KeyIndex] = OrderedDict()


def index_of(group: Sequence[Member], which: Which) -> KeyIndex:
    """The index of a member list (the room's, kept while its members do not change),
    built on first use; the least recently used go past `INDEXED_GROUPS`."""
    key = (id(group), which)
    found = _indexes.get(key)
    if found is None or found.group is not group:
        found = _indexes[key] = KeyIndex.of(group, which)
        if len(_indexes) > INDEXED_GROUPS:
            _indexes.popitem(last=False)
    else:
        _indexes.move_to_end(key)
    return found
