"""Checks across settings that a type alone cannot express, each failing with one line."""

from __future__ import annotations

import ipaddress
import math
import ssl
from pathlib import Path

from federation.identifiers import is_valid_server_name
from federation.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.config import admin, cluster, email, federation, media, memory, oidc, voip
from homeserver.config.model import Config
from homeserver.config.setting import ConfigError
from homeserver.config.settings import RATE_LIMIT_DEFAULTS
from homeserver.storage.core.pool import is_conninfo

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _validate_logging(config: Config) -> None:
    if config.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format must be text or json")


def validate(config: Config) -> None:
    memory.validate(config)
    admin.validate(config)
    media.validate(config)
    if not is_valid_server_name(config.server_name):
        raise ConfigError(f"server_name {config.server_name!r} is not a valid server name")
    for name in ("port", "tls_port"):
        port = getattr(config, name)
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    if config.tls_port is not None and not (config.tls_cert and config.tls_key):
        raise ConfigError("tls_port needs tls_cert and tls_key")
    for name in ("tls_cert", "tls_key"):
        path = getattr(config, name)
        if config.tls_port is not None and path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file {path}")
    if config.federation_ca_file is not None:
        _check_ca_file(config.federation_ca_file)
    _validate_logging(config)
    if config.default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(f"default_room_version {config.default_room_version!r} is not supported")
    if config.database_pool_size < 1:
        raise ConfigError("database.pool_size must be at least 1")
    if config.access_token_lifetime_ms < 1000:
        raise ConfigError("access_token_lifetime_ms must be at least 1000")
    if not 1 <= config.argon2_time_cost <= 100:
        raise ConfigError("argon2_time_cost must be between 1 and 100")
    if config.max_request_size < 1024:
        raise ConfigError("max_request_size must be at least 1024 bytes")
    if config.database_url is not None and not is_conninfo(config.database_url):
        raise ConfigError("database.url is not a PostgreSQL URL (postgresql://...)")
    cluster.validate(config)
    if not 1 <= config.federation_max_retry_interval_s <= 86400:
        raise ConfigError("federation.max_retry_interval_s must be between 1 and 86400")
    _check_ranges("federation.ip_range_whitelist", config.federation_ip_range_whitelist)
    _check_ranges("push.ip_range_whitelist", config.push_ip_range_whitelist)
    _check_ranges(
        "media.url_preview.ip_range_whitelist", config.media_url_preview_ip_range_whitelist
    )
    if config.media_url_preview_max_size < 1:
        raise ConfigError("media.url_preview.max_size must be at least 1 byte")
    if not 0 < config.media_url_preview_timeout_s <= 600:
        raise ConfigError("media.url_preview.timeout_s must be above 0 and at most 600")
    if not 1 <= config.push_retention_days <= config.push_unread_retention_days:
        raise ConfigError(
            "push.retention_days must be at least 1 and at most push.unread_retention_days"
        )
    for notary in config.federation_trusted_key_servers:
        if not is_valid_server_name(notary):
            raise ConfigError(f"federation.trusted_key_servers: {notary!r} is not a server name")
    voip.validate(config)
    for action in RATE_LIMIT_DEFAULTS:
        per_second, burst = config.rate_limit(action)
        if not (per_second > 0 and math.isfinite(per_second)):
            raise ConfigError(f"rate_limits.{action}.per_second must be a positive number")
        if burst < 1:
            raise ConfigError(f"rate_limits.{action}.burst must be at least 1")
    oidc.validate(config)
    email.validate(config)
    federation.validate(config)


def _check_ranges(key: str, ranges: tuple[str, ...]) -> None:
    for cidr in ranges:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {cidr!r} is not an address range") from None


def _check_ca_file(path: str) -> None:
    """Refuse at start a CA file that cannot be read, rather than fail every federation
    request later."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"federation.ca_file: cannot load {path}: {exc}") from None
