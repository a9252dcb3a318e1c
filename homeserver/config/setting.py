"""One setting: its dotted key, type, default and help, and how raw values become it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration problem, reported to the user as one line."""


class Duration:
    """The type of a duration setting, held in milliseconds. Values are written as
    Synapse writes them: an integer of milliseconds, or a number with a unit such as
    `500ms`, `10s`, `5m`, `1h`, `2d`, `1w` or `1y`."""


_DURATION_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")


def parse_duration_ms(value: Any) -> int | None:
    """Milliseconds of a Synapse-style duration, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            return int(float(number) * _DURATION_UNITS_MS[unit or "ms"])
    return None


@dataclass(frozen=True)
class Setting:
    key: str  # dotted path in the YAML file, e.g. "database.url"
    type: type
    default: Any
    help: str
    flag: bool = True  # exposed as a command-line flag of `run`
    nullable: bool = False

    @property
    def env_name(self) -> str:
        return "HOMESERVER_" + self.key.upper().replace(".", "_")

    @property
    def flag_name(self) -> str:
        return "--" + self.key.replace(".", "-").replace("_", "-")

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")


def coerce(setting: Setting, value: Any, source: str) -> Any:
    """The setting's value from a raw one (YAML, an environment variable or a flag)."""
    if value is None:
        if setting.nullable:
            return None
        raise ConfigError(f"{source}: {setting.key} must not be empty")
    if setting.type in (dict, list):
        return _coerce_structured(setting, value, source)
    if setting.type is Duration:
        duration = parse_duration_ms(value)
        if duration is not None:
            return duration
        raise ConfigError(
            f"{source}: {setting.key} must be a duration such as 10s or 1h, got {value!r}"
        )
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif setting.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif setting.type is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif setting.type is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif setting.type is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{source}: {setting.key} must be {setting.type.__name__}, got {value!r}")


def _coerce_structured(setting: Setting, value: Any, source: str) -> Any:
    """A whole mapping or list taken as one setting (Synapse's blocks such as
    `oidc_providers`); from the environment it is written as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{source}: {setting.key} must be JSON when given as text") from None
    if isinstance(value, setting.type):
        return value
    raise ConfigError(f"{source}: {setting.key} must be a {setting.type.__name__}, got {value!r}")
