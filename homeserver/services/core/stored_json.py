"""What client JSON we can keep in a PostgreSQL `jsonb` column.

`jsonb` rejects the NUL character in strings and keys, and our JSON encoder stops
at 255 levels of nesting: both would surface as server errors, so refuse such
values up front as the client's fault.
"""

from __future__ import annotations

from typing import Any

from homeserver.services.core.errors import bad_json

MAX_DEPTH = 100


def ensure_storable(
    value: Any, what: str = "Content", *, allow_nul: bool = False, nul_in_events: bool = False
) -> None:
    """Raise 400 M_BAD_JSON when `value` could not be stored as jsonb (or, with
    `allow_nul`, when it is nested too deep to be stored as JSON text).

    With `nul_in_events`, NUL is allowed in the `content` of the events found inside
    `value` (as `allow_nul` allows it in a client's event content): a federation body
    carries events, stored as JSON text, beside ids and keys that go into columns."""
    stack: list[tuple[Any, int, bool]] = [(value, 1, allow_nul)]
    while stack:
        item, depth, nul_ok = stack.pop()
        if isinstance(item, str):
            if not nul_ok and "\x00" in item:
                raise bad_json(f"{what} must not contain the NUL character")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise bad_json(f"{what} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, list):
                stack.extend((child, depth + 1, nul_ok) for child in item)
                continue
            content_nul_ok = nul_ok or (nul_in_events and _is_event(item))
            stack.extend((key, depth, nul_ok) for key in item)
            stack.extend(
                (child, depth + 1, content_nul_ok if key == "content" else nul_ok)
                for key, child in item.items()
            )


def _is_event(item: dict[str, Any]) -> bool:
    """A PDU or a stripped state event: a type, a sender or state key, and content."""
    return "type" in item and ("sender" in item or "state_key" in item)
