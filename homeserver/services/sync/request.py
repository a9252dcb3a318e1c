"""What a `/sync` request asks for, parsed from its query string."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.services.core.errors import invalid_param

MAX_TIMEOUT_MS = 5 * 60 * 1000
PRESENCE_STATES = ("online", "offline", "unavailable")


@dataclass(frozen=True, slots=True)
class SyncRequest:
    since: str | None = None
    filter: str | None = None
    full_state: bool = False
    timeout_ms: int = 0
    set_presence: str | None = None
    use_state_after: bool = False  # `state_after` (state at the timeline's end)


def parse_bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value in ("true", "false"):
        return value == "true"
    raise invalid_param(f"{name} must be 'true' or 'false'")


def parse_timeout(value: str | None) -> int:
    if value is None:
        return 0
    try:
        timeout = int(value)
    except ValueError:
        raise invalid_param("timeout must be an integer number of milliseconds") from None
    return max(0, timeout)
