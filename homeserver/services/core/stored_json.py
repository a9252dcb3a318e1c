"""What client JSON we can keep in a PostgreSQL `jsonb` column.

`jsonb` rejects the NUL character in strings and keys, and our JSON encoder stops
at 255 levels of nesting: both would surface as server errors, so refuse such
values up front as the client's fault.
"""

from __future__ import annotations

from typing import Any

from homeserver.services.core.errors import bad_json

MAX_DEPTH = 100


def ensure_storable(value: Any, what: str = "Content", *, allow_nul: bool = False) -> None:
    """Raise 400 M_BAD_JSON when `value` could not be stored as jsonb (or, with
    `allow_nul`, when it is nested too deep to be stored as JSON text)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not allow_nul and "\x00" in item:
                raise bad_json(f"{what} must not contain the NUL character")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise bad_json(f"{what} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
