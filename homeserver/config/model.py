"""The validated configuration, one typed field per setting (dots become underscores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Config:
    server_name: str
    bind: str
    port: int
    tls_port: int | None
    tls_cert: str | None
    tls_key: str | None
    database_url: str | None
    database_pool_size: int
    open_registration: bool
    registration_requires_token: bool
    access_token_lifetime_ms: int
    argon2_time_cost: int
    public_baseurl: str | None
    well_known_server: str | None
    log_level: str
    max_request_size: int
    default_room_version: str
    presence_enabled: bool
    rate_limits_enabled: bool
    rate_limits_login_per_second: float
    rate_limits_login_burst: int
    rate_limits_registration_per_second: float
    rate_limits_registration_burst: int
    rate_limits_message_per_second: float
    rate_limits_message_burst: int
    rate_limits_room_creation_per_second: float
    rate_limits_room_creation_burst: int
    rate_limits_invite_per_second: float
    rate_limits_invite_burst: int
    rate_limits_join_per_second: float
    rate_limits_join_burst: int
    federation_verify_tls: bool
    federation_use_tls: bool
    federation_max_retry_interval_s: float
    federation_ip_range_whitelist: tuple[str, ...]
    federation_trusted_key_servers: tuple[str, ...]
    federation_ca_file: str | None = None
    user_directory_search_all_users: bool = False
    media_max_upload_size: int = 50 * 1024 * 1024
    media_remote_timeout_s: float = 60.0
    enable_authenticated_media: bool = True
    media_upload_limits: list[Any] = field(default_factory=list)
    media_retention: dict[str, Any] = field(default_factory=dict)
    push_ip_range_whitelist: tuple[str, ...] = ()
    push_retention_days: int = 30
    push_unread_retention_days: int = 90
    app_service_config_files: tuple[str, ...] = ()
    media_url_preview_enabled: bool = False
    media_url_preview_max_size: int = 10 * 1024 * 1024
    media_url_preview_timeout_s: float = 10.0
    media_url_preview_ip_range_whitelist: tuple[str, ...] = ()
    media_url_preview_url_blacklist: tuple[str, ...] = ()
    rate_limits_url_preview_per_second: float = 1.0
    rate_limits_url_preview_burst: int = 10
    oidc_providers: list[Any] = field(default_factory=list)
    oidc_config: dict[str, Any] | None = None
    sso_client_whitelist: tuple[str, ...] = ()
    sso_update_profile_information: bool = False
    rate_limits_delayed_event_mgmt_per_second: float = 1.0
    rate_limits_delayed_event_mgmt_burst: int = 20
    turn_uris: tuple[str, ...] = ()
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    turn_user_lifetime: int = 60 * 60 * 1000
    turn_allow_guests: bool = True
    max_event_delay_duration: int = 24 * 60 * 60 * 1000
    extra_well_known_client_content: dict[str, Any] = field(default_factory=dict)
    matrix_rtc_transports: list[dict[str, Any]] = field(default_factory=list)
    rate_limits_threepid_validation_per_second: float = 0.003
    rate_limits_threepid_validation_burst: int = 5
    email_smtp_host: str = "localhost"
    email_smtp_port: int | None = None
    email_smtp_user: str | None = None
    email_smtp_pass: str | None = None
    email_force_tls: bool = False
    email_require_transport_security: bool = False
    email_enable_tls: bool = True
    email_notif_from: str | None = None
    email_app_name: str = "Matrix"
    email_enable_notifs: bool = False
    email_notif_for_new_users: bool = True
    email_notif_delay_before_mail: int = 10 * 60 * 1000
    email_client_base_url: str | None = None
    email_validation_token_lifetime: int = 60 * 60 * 1000
    email_subjects: dict[str, str] = field(default_factory=dict)
    email_riot_base_url: str | None = None
    registrations_require_3pid: tuple[str, ...] = ()
    enable_3pid_changes: bool = True
    old_signing_keys: dict[str, Any] = field(default_factory=dict)
    allow_public_rooms_over_federation: bool = False
    event_cache_size: int = 10_000
    caches_state_entries_size: int = 50_000
    password_hash_concurrency: int = 1
    argon2_memory_cost: int = 19 * 1024
    registration_shared_secret: str | None = None
    server_notices: dict[str, Any] = field(default_factory=dict)
    admin_contact: str | None = None
    support_contacts: list[dict[str, Any]] = field(default_factory=list)
    support_page: str | None = None
    log_format: str = "text"
    metrics_bind: str = "127.0.0.1"
    metrics_port: int | None = None
    x_forwarded: bool = False
    signing_key_path: str | None = None
    media_store_path: str | None = None
    database_replicas: tuple[str, ...] = ()
    data_dir: Path = field(default=Path("homeserver-data"))

    def rate_limit(self, action: str) -> tuple[float, int]:
        """(per_second, burst) of a rate-limited action named in RATE_LIMIT_DEFAULTS."""
        prefix = f"rate_limits_{action}_"
        return getattr(self, prefix + "per_second"), getattr(self, prefix + "burst")

    @property
    def signing_key_file(self) -> Path:
        """`signing_key_path`, or the data directory's `signing.key`."""
        if self.signing_key_path:
            return Path(self.signing_key_path)
        return self.data_dir / "signing.key"

    @property
    def media_dir(self) -> Path:
        """`media_store_path`, or the data directory's `media`."""
        if self.media_store_path:
            return Path(self.media_store_path)
        return self.data_dir / "media"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def client_base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        host = "localhost" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"http://{host}:{self.port}/"
