"""Sync tokens: one position per stream, so a client resumes every stream at once.

The text form is `s{events}_{account_data}_{receipts}_{typing}_{to_device}_
{device_lists}_{presence}` (one string, no line break). Every part but `typing` is
a database stream position and so survives restarts. `typing` is the position of
one process's in-memory typing state (see services/ephemeral/typing.py); a token whose
typing part is ahead of this process's is read as 0: at worst the client is told
the current typing notices again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

# Stream names, in token order. All but "typing" are rows of `stream_positions`.
PARTS = (
    "events",
    "account_data",
    "receipts",
    "typing",
    "to_device",
    "device_lists",
    "presence",
)
DB_STREAMS = tuple(p for p in PARTS if p != "typing")

# 18 digits keep every part inside a BIGINT; a longer part is garbage, not the future.
_TOKEN = re.compile(r"s([0-9]{1,18})" + r"_([0-9]{1,18})" * (len(PARTS) - 1))


class InvalidToken(ValueError):
    """The text is not a sync token."""


@dataclass(frozen=True, slots=True)
class SyncToken:
    events: int = 0
    account_data: int = 0
    receipts: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        match = _TOKEN.fullmatch(text)
        if match is None:
            raise InvalidToken(text)
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in PARTS)

    def get(self, stream: str) -> int:
        return int(getattr(self, stream))

    def with_(self, **positions: int) -> SyncToken:
        return replace(self, **positions)

    def max(self, other: SyncToken) -> SyncToken:
        """Part by part, the later of two tokens: a client never moves backwards."""
        return SyncToken(
            *(max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))
        )

    def ahead_of(self, other: SyncToken, streams: tuple[str, ...] = PARTS) -> list[str]:
        """The streams in which this token is beyond `other`."""
        return [s for s in streams if self.get(s) > other.get(s)]
