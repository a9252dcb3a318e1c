"""Settings for running several processes behind a load balancer (see contrib/deploy/)."""

from __future__ import annotations

from homeserver.config.setting import Setting

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
)
