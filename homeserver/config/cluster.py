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
)
