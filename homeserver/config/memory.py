"""Settings that bound the server's memory: its caches and password hashing.

`event_cache_size` is Synapse's setting of that name (a number of events; Synapse's
default, 10,000, is ours too). Each cached event costs about 3 KiB, each state entry
about 200 bytes; each password hash running holds `argon2_memory_cost` KiB (19 MiB by
default, OWASP's recommendation for argon2id)."""

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
        1,
        "password hashes computed at once (each holds argon2_memory_cost while it runs);"
        " others wait",
        flag=False,
    ),
    Setting(
        "argon2_memory_cost",
        int,
        19 * 1024,
        "KiB of memory per argon2id password hash (existing hashes keep their own)",
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
    if not 8 * 1024 <= config.argon2_memory_cost <= 1024 * 1024:
        raise ConfigError("argon2_memory_cost must be between 8192 and 1048576 (KiB)")
