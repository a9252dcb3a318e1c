"""Settings for running several processes behind a load balancer (see contrib/deploy/)."""

from __future__ import annotations

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting
from homeserver.storage.core.pool import is_conninfo

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "x_forwarded",
        bool,
        False,
        "behind a load balancer: take the client's address from the last X-Forwarded-For"
        " entry (the one the balancer added), for rate limits and logs",
    ),
    Setting(
        "signing_key_path",
        str,
        None,
        "the server's signing key file, one for every process of the server (created on"
        " first start); default DATA_DIR/signing.key",
        nullable=True,
    ),
    Setting(
        "media_store_path",
        str,
        None,
        "the media directory, one for every process of the server (a shared mount"
        " across machines); default DATA_DIR/media",
        nullable=True,
    ),
    Setting(
        "database.replicas",
        tuple,
        (),
        "PostgreSQL URLs of streaming replicas of the database: read-only paths that"
        " tolerate it read there when the replica has replayed what the client has seen",
        flag=False,
    ),
)


def validate(config: Config) -> None:
    for url in config.database_replicas:
        if not is_conninfo(url):
            raise ConfigError(f"database.replicas: {url!r} is not a PostgreSQL URL")
