"""The table of every setting. The core ones are declared here; a concern with a block of
its own (Synapse-shaped, so operators can paste theirs) declares its settings in its own
module of this package and is added to `SETTINGS` below."""

from __future__ import annotations

from federation.room_versions import DEFAULT_ROOM_VERSION
from homeserver.config import admin, cluster, email, federation, media, memory, oidc, voip
from homeserver.config.setting import Setting

# Token buckets per user (or per address when unauthenticated): (per_second, burst).
RATE_LIMIT_DEFAULTS: dict[str, tuple[float, int]] = {
    "login": (0.17, 5),
    "registration": (0.17, 3),
    "message": (0.2, 10),
    "room_creation": (0.1, 5),
    "invite": (0.3, 10),
    "join": (0.1, 10),
    "url_preview": (1.0, 10),
    # Restarting, cancelling and sending delayed events: MatrixRTC clients restart their
    # delayed leave every few seconds per call (Synapse's rc_delayed_event_mgmt).
    "delayed_event_mgmt": (1.0, 20),
    # requestToken, per client address and per email address (Synapse's rc_3pid_validation)
    "threepid_validation": (0.003, 5),
}

_CORE: tuple[Setting, ...] = (
    Setting("server_name", str, "localhost", "the domain part of user ids on this server"),
    Setting("bind", str, "127.0.0.1", "address to listen on"),
    Setting("port", int, 8008, "plain HTTP port"),
    Setting("tls_port", int, None, "HTTPS port (needs tls_cert and tls_key)", nullable=True),
    Setting("tls_cert", str, None, "PEM certificate chain for the TLS port", nullable=True),
    Setting("tls_key", str, None, "PEM private key for the TLS port", nullable=True),
    Setting(
        "database.url",
        str,
        None,
        "PostgreSQL URL; empty means the embedded PostgreSQL in the data directory",
        nullable=True,
    ),
    Setting("database.pool_size", int, 10, "connections in the pool", flag=False),
    Setting("open_registration", bool, False, "let anyone register an account"),
    Setting(
        "registration_requires_token",
        bool,
        False,
        "registration needs a token made with `homeserver registration-token create`",
    ),
    Setting(
        "access_token_lifetime_ms",
        int,
        5 * 60 * 1000,
        "lifetime of access tokens issued with a refresh token (others do not expire)",
        flag=False,
    ),
    Setting(
        "argon2_time_cost",
        int,
        3,
        "argon2id passes per password hash; more passes make stolen hashes costlier to crack",
        flag=False,
    ),
    Setting("public_baseurl", str, None, "public URL of the client API", nullable=True),
    Setting(
        "well_known.server",
        str,
        None,
        "host:port other servers should use to reach us (/.well-known/matrix/server)",
        nullable=True,
        flag=False,
    ),
    Setting("log_level", str, "info", "debug, info, warning or error"),
    Setting(
        "log_format",
        str,
        "text",
        "text, or json: one JSON object per line (ts, level, logger, message, request_id)",
    ),
    Setting("max_request_size", int, 50 * 1024 * 1024, "largest request body in bytes", flag=False),
    Setting(
        "default_room_version", str, DEFAULT_ROOM_VERSION, "room version of new rooms", flag=False
    ),
    Setting("presence.enabled", bool, True, "track and share users' online status"),
    Setting(
        "media.max_upload_size",
        int,
        50 * 1024 * 1024,
        "largest media upload, and largest remote media fetched, in bytes",
        flag=False,
    ),
    Setting(
        "media.remote_timeout_s",
        float,
        60.0,
        "time allowed to fetch one remote file from its server",
        flag=False,
    ),
    Setting(
        "media.url_preview.enabled",
        bool,
        False,
        "let clients ask the server to fetch web pages for link previews (off: the server"
        " would fetch any URL a user names)",
        flag=False,
    ),
    Setting(
        "media.url_preview.max_size",
        int,
        10 * 1024 * 1024,
        "largest page or image fetched for a link preview, in bytes",
        flag=False,
    ),
    Setting(
        "media.url_preview.timeout_s",
        float,
        10.0,
        "time allowed to fetch one page (or its image) for a link preview",
        flag=False,
    ),
    Setting(
        "media.url_preview.ip_range_whitelist",
        tuple,
        (),
        "non-public address ranges (CIDR) link previews may fetch from; others are refused",
        flag=False,
    ),
    Setting(
        "media.url_preview.url_blacklist",
        tuple,
        (),
        "URLs never previewed: glob patterns on the host (*.example.com) or host and path"
        " (example.com/private/*)",
        flag=False,
    ),
    Setting(
        "user_directory.search_all_users",
        bool,
        False,
        "let the user directory find every local user, not only those sharing a room",
        flag=False,
    ),
    Setting("rate_limits.enabled", bool, True, "answer floods with 429 M_LIMIT_EXCEEDED"),
    Setting(
        "federation.verify_tls",
        bool,
        True,
        "check other servers' TLS certificates (turn off only on test networks)",
    ),
    Setting(
        "federation.use_tls",
        bool,
        True,
        "reach other servers over HTTPS; false (plain HTTP) is for tests on loopback only",
        flag=False,
    ),
    Setting(
        "federation.ca_file",
        str,
        None,
        "PEM file of certificate authorities trusted for other servers' certificates, besides"
        " the system's (the CA of a private federation)",
        nullable=True,
        flag=False,
    ),
    Setting(
        "federation.max_retry_interval_s",
        float,
        3600.0,
        "longest wait between retries of a server that does not answer (the wait doubles"
        " from 1 s up to this)",
        flag=False,
    ),
    Setting(
        "federation.ip_range_whitelist",
        tuple,
        (),
        "non-public address ranges (CIDR) federation may connect to; others are refused",
        flag=False,
    ),
    Setting(
        "push.ip_range_whitelist",
        tuple,
        (),
        "non-public address ranges (CIDR) push gateways may be reached at; others are refused",
        flag=False,
    ),
    Setting(
        "push.retention_days",
        int,
        30,
        "days a read notification is kept (for /notifications) before it is deleted",
        flag=False,
    ),
    Setting(
        "push.unread_retention_days",
        int,
        90,
        "days an unread notification is kept before it is deleted",
        flag=False,
    ),
    Setting(
        "app_service_config_files",
        tuple,
        (),
        "registration files (YAML) of application services (bridges), read at start",
        flag=False,
    ),
    Setting(
        "federation.trusted_key_servers",
        tuple,
        (),
        "notary servers asked for keys a server cannot give us itself (none by default)",
        flag=False,
    ),
    *(
        setting
        for action, (per_second, burst) in RATE_LIMIT_DEFAULTS.items()
        for setting in (
            Setting(
                f"rate_limits.{action}.per_second",
                float,
                per_second,
                f"sustained {action} requests per second allowed per user or address",
                flag=False,
            ),
            Setting(
                f"rate_limits.{action}.burst",
                int,
                burst,
                f"{action} requests allowed at once before the sustained rate applies",
                flag=False,
            ),
        )
    ),
)

SETTINGS: tuple[Setting, ...] = (
    *_CORE,
    *oidc.SETTINGS,
    *voip.SETTINGS,
    *email.SETTINGS,
    *federation.SETTINGS,
    *memory.SETTINGS,
    *admin.SETTINGS,
    *cluster.SETTINGS,
    *media.SETTINGS,
)

BY_KEY = {s.key: s for s in SETTINGS}

# Synapse settings a pasted block may carry that this server does not use: read past
# with a warning instead of stopping the start.
TOLERATED: frozenset[str] = frozenset(email.TOLERATED)
