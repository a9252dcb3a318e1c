"""Server configuration: one table of settings, read from defaults, a YAML file,
`HOMESERVER_<NAME>` environment variables and command-line flags, in that order.

Every setting is declared once in `SETTINGS`; the CLI flags, the environment
variable names, the generated config file and the validation all come from it,
so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from federation.identifiers import is_valid_server_name
from federation.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS


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
    public_baseurl: str | None
    well_known_server: str | None
    log_level: str
    max_request_size: int
    default_room_version: str
    data_dir: Path = field(default=Path("homeserver-data"))

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
    if config.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
    if config.default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(f"default_room_version {config.default_room_version!r} is not supported")
    if config.database_pool_size < 1:
        raise ConfigError("database.pool_size must be at least 1")
    if config.max_request_size < 1024:
        raise ConfigError("max_request_size must be at least 1024 bytes")
    if config.database_url is not None and not _is_postgres_conninfo(config.database_url):
        raise ConfigError("database.url is not a PostgreSQL URL (postgresql://...)")


def _is_postgres_conninfo(value: str) -> bool:
    """A postgresql:// URL, or a libpq "key=value" string."""
    if value.startswith(("postgresql://", "postgres://")):
        return True
    if "=" not in value:
        return False
    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return False
    return True


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
    sections: dict[str, list[Setting]] = {}
    for setting in SETTINGS:
        head, _, _ = setting.key.rpartition(".")
        sections.setdefault(head, []).append(setting)
    for head, settings in sections.items():
        indent = ""
        if head:
            lines.append(f"{head}:")
            indent = "  "
        for setting in settings:
            name = setting.key.rpartition(".")[2]
            lines.append(f"{indent}# {setting.help}")
            value: Any = server_name if setting.key == "server_name" else setting.default
            rendered = yaml.safe_dump(value, default_flow_style=True).strip()
            rendered = rendered.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{indent}{name}: {rendered}")
        lines.append("")
    return "\n".join(lines)
