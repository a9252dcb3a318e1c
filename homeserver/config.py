"""Server configuration: one table of settings, read from defaults, a YAML file,
`HOMESERVER_<NAME>` environment variables and command-line flags, in that order.

Every setting is declared once in `SETTINGS`; the CLI flags, the environment
variable names, the generated config file and the validation all come from it,
so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.identifiers import is_valid_server_name
from federation.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from homeserver.storage.core.pool import is_conninfo


class ConfigError(Exception):
    """A configuration problem, reported to the user as one line."""


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


# Token buckets per user (or per address when unauthenticated): (per_second, burst).
RATE_LIMIT_DEFAULTS: dict[str, tuple[float, int]] = {
    "login": (0.17, 5),
    "registration": (0.17, 3),
    "message": (0.2, 10),
    "room_creation": (0.1, 5),
    "invite": (0.3, 10),
    "join": (0.1, 10),
    "url_preview": (1.0, 10),
}

SETTINGS: tuple[Setting, ...] = (
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

_BY_KEY = {s.key: s for s in SETTINGS}
_LOG_LEVELS = ("debug", "info", "warning", "error")


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
    data_dir: Path = field(default=Path("homeserver-data"))

    def rate_limit(self, action: str) -> tuple[float, int]:
        """(per_second, burst) of a rate-limited action named in RATE_LIMIT_DEFAULTS."""
        prefix = f"rate_limits_{action}_"
        return getattr(self, prefix + "per_second"), getattr(self, prefix + "burst")

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "signing.key"

    @property
    def media_dir(self) -> Path:
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


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    if value is None:
        if setting.nullable:
            return None
        raise ConfigError(f"{source}: {setting.key} must not be empty")
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


def _flatten(data: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: keys must be strings, got {key!r}")
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in _BY_KEY:
            if not any(k.startswith(dotted + ".") for k in _BY_KEY):
                raise ConfigError(f"{source}: unknown setting {dotted!r}")
            out.update(_flatten(value, dotted + ".", source))
        elif dotted in _BY_KEY:
            out[dotted] = value
        else:
            raise ConfigError(f"{source}: unknown setting {dotted!r}")
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return _flatten(data, "", str(path))


def load_config(
    data_dir: Path,
    file_values: Mapping[str, Any],
    environ: Mapping[str, str],
    flag_values: Mapping[str, Any],
) -> Config:
    """Merge the sources (later wins) and validate the result."""
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    for key, value in file_values.items():
        values[key] = _coerce(_BY_KEY[key], value, "config file")
    for setting in SETTINGS:
        if setting.env_name in environ:
            raw: Any = environ[setting.env_name]
            if raw == "" and setting.nullable:
                raw = None
            values[setting.key] = _coerce(setting, raw, setting.env_name)
    for key, value in flag_values.items():
        if value is not None:
            values[key] = _coerce(_BY_KEY[key], value, _BY_KEY[key].flag_name)
    config = Config(
        data_dir=data_dir,
        **{key.replace(".", "_"): value for key, value in values.items()},
    )
    _validate(config)
    return config


def _validate(config: Config) -> None:
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
    if config.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
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
    if config.media_max_upload_size < 1:
        raise ConfigError("media.max_upload_size must be at least 1 byte")
    if not 1 <= config.media_remote_timeout_s <= 3600:
        raise ConfigError("media.remote_timeout_s must be between 1 and 3600")
    if config.database_url is not None and not is_conninfo(config.database_url):
        raise ConfigError("database.url is not a PostgreSQL URL (postgresql://...)")
    if not 1 <= config.federation_max_retry_interval_s <= 86400:
        raise ConfigError("federation.max_retry_interval_s must be between 1 and 86400")
    for cidr in config.federation_ip_range_whitelist:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"federation.ip_range_whitelist: {cidr!r} is not an address range"
            ) from None
    for cidr in config.push_ip_range_whitelist:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"push.ip_range_whitelist: {cidr!r} is not an address range"
            ) from None
    for cidr in config.media_url_preview_ip_range_whitelist:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"media.url_preview.ip_range_whitelist: {cidr!r} is not an address range"
            ) from None
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
    for action in RATE_LIMIT_DEFAULTS:
        per_second, burst = config.rate_limit(action)
        if not (per_second > 0 and math.isfinite(per_second)):
            raise ConfigError(f"rate_limits.{action}.per_second must be a positive number")
        if burst < 1:
            raise ConfigError(f"rate_limits.{action}.burst must be at least 1")


def _check_ca_file(path: str) -> None:
    """Refuse at start a CA file that cannot be read, rather than fail every federation
    request later."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"federation.ca_file: cannot load {path}: {exc}") from None


def resolve_data_dir(flag: str | None, environ: Mapping[str, str]) -> Path:
    raw = flag or environ.get("HOMESERVER_DATA_DIR") or "homeserver-data"
    return Path(raw).expanduser().absolute()


def generated_config_text(server_name: str) -> str:
    """The commented config file written on first run."""
    lines = [
        "# Homeserver configuration. Every setting can also be given as an environment",
        "# variable HOMESERVER_<NAME> (e.g. HOMESERVER_DATABASE_URL) or a flag of `run`.",
        "",
    ]
    # Top-level settings first, then one nested block per section (e.g. rate_limits.login).
    tree: dict[str, Any] = {}
    for setting in SETTINGS:
        *heads, name = setting.key.split(".")
        node = tree
        for head in heads:
            node = node.setdefault(head, {})
        node[name] = setting
    _emit_settings(tree, "", server_name, lines)
    return "\n".join(lines)


def _emit_settings(node: dict[str, Any], indent: str, server_name: str, lines: list[str]) -> None:
    for name, child in node.items():
        if isinstance(child, Setting):
            lines.append(f"{indent}# {child.help}")
            value: Any = server_name if child.key == "server_name" else child.default
            rendered = yaml.safe_dump(value, default_flow_style=True).strip()
            rendered = rendered.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{indent}{name}: {rendered}")
    if not indent:
        lines.append("")
    for name, child in node.items():
        if isinstance(child, dict):
            lines.append(f"{indent}{name}:")
            _emit_settings(child, indent + "  ", server_name, lines)
            if not indent:
                lines.append("")
