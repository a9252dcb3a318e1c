"""Settings that bound the server's memory: its caches and password hashing.

`event_cache_size` is Synapse's setting of that name (a number of events; Synapse's
default, 10,000, is ours too). Each cached event costs about 3 KiB, each state entry
about 200 bytes; each password hash running holds 64 MiB (argon2id's memory cost)."""

from __future__ import annotations

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "event_cache_size",
        int,
        10_000,
        "events kept in memory (parsed, by id), as Synapse's setting of that name",
        flag=False,
    ),
    Setting(
        "caches.state_entries_size",
        int,
        50_000,
        "entries of state groups kept in memory (a room state key each)",
        flag=False,
    ),
    Setting(
        "password_hash_concurrency",
        int,
        2,
        "password hashes computed at once (each holds 64 MiB while it runs); others wait",
        flag=False,
    ),
)


def validate(config: Config) -> None:
    if config.event_cache_size < 100:
        raise ConfigError("event_cache_size must be at least 100")
    if config.caches_state_entries_size < 100:
        raise ConfigError("caches.state_entries_size must be at least 100")
    if not 1 <= config.password_hash_concurrency <= 64:
        raise ConfigError("password_hash_concurrency must be between 1 and 64")
