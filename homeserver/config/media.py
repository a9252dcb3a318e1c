"""Media policy under Synapse's top-level names: authenticated media, per-user upload
limits (`media_upload_limits`, sizes written as Synapse writes them) and retention
(`media_retention`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting, parse_duration_ms

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "enable_authenticated_media",
        bool,
        True,
        "media uploaded or cached while on is served, while it stays on, only on the"
        " authenticated /_matrix/client/v1/media endpoints (404 on the legacy /_matrix/media/v3"
        " ones, which then fetch no remote media); older media is unaffected",
        flag=False,
    ),
    Setting(
        "media_retention",
        dict,
        {},
        "delete media not served for a while: {local_media_lifetime: 90d,"
        " remote_media_lifetime: 14d} (either may be left out: kept forever); protected and"
        " quarantined media and users' avatars are kept",
        flag=False,
    ),
    Setting(
        "media_upload_limits",
        list,
        [],
        "per-user upload quotas, e.g. [{time_period: 1h, max_size: 100M}, {time_period: 1w,"
        " max_size: 500M, info_uri: https://..., can_upgrade: true}]: an upload that would"
        " pass one is refused with 403 M_USER_LIMIT_EXCEEDED",
        flag=False,
    ),
)


@dataclass(frozen=True, slots=True)
class UploadLimit:
    """At most `max_bytes` uploaded by one user within any `period_ms`; `info_uri` is
    where a refused user reads more (else the server's own page)."""

    period_ms: int
    max_bytes: int
    info_uri: str | None = None
    can_upgrade: bool = False


def parse_size(value: Any) -> int | None:
    """Bytes of a Synapse-style size (an integer, or a number with K, M, G or T)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return None


def upload_limits(raw: list[Any]) -> tuple[UploadLimit, ...]:
    """The parsed `media_upload_limits`; ConfigError names the bad entry."""
    limits = []
    for index, entry in enumerate(raw):
        where = f"media_upload_limits[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with time_period and max_size")
        period = parse_duration_ms(entry.get("time_period"))
        size = parse_size(entry.get("max_size"))
        if not period:
            raise ConfigError(f"{where}.time_period must be a duration such as 1h")
        if size is None:
            raise ConfigError(f"{where}.max_size must be a size such as 100M")
        info_uri, can_upgrade = entry.get("info_uri"), entry.get("can_upgrade", False)
        if info_uri is not None and not isinstance(info_uri, str):
            raise ConfigError(f"{where}.info_uri must be a URL")
        if not isinstance(can_upgrade, bool):
            raise ConfigError(f"{where}.can_upgrade must be true or false")
        limits.append(UploadLimit(period, size, info_uri, can_upgrade))
    return tuple(limits)


def retention_lifetimes(raw: dict[str, Any]) -> tuple[int | None, int | None]:
    """(local, remote) media lifetimes in ms from `media_retention`; None: kept forever."""
    lifetimes: list[int | None] = []
    for key in ("local_media_lifetime", "remote_media_lifetime"):
        value = raw.get(key)
        if value is None:
            lifetimes.append(None)
            continue
        lifetime = parse_duration_ms(value)
        if not lifetime:
            raise ConfigError(f"media_retention.{key} must be a duration such as 30d")
        lifetimes.append(lifetime)
    unknown = set(raw) - {"local_media_lifetime", "remote_media_lifetime"}
    if unknown:
        raise ConfigError(f"media_retention: unknown keys {', '.join(sorted(unknown))}")
    return lifetimes[0], lifetimes[1]


def validate(config: Config) -> None:
    if config.media_max_upload_size < 1:
        raise ConfigError("media.max_upload_size must be at least 1 byte")
    if not 1 <= config.media_remote_timeout_s <= 3600:
        raise ConfigError("media.remote_timeout_s must be between 1 and 3600")
    upload_limits(config.media_upload_limits)
    retention_lifetimes(config.media_retention)
