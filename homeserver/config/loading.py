"""Reading the sources (defaults, a YAML file, `HOMESERVER_<NAME>` environment variables,
command-line flags; later wins) into one validated `Config`, and writing the commented
file a first run starts from."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from homeserver.config.federation import read_retired_keys
from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting, coerce
from homeserver.config.settings import BY_KEY, SETTINGS, TOLERATED
from homeserver.config.validation import validate

log = logging.getLogger(__name__)


def _flatten(data: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: keys must be strings, got {key!r}")
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in BY_KEY:
            if not any(k.startswith(dotted + ".") for k in BY_KEY):
                raise ConfigError(f"{source}: unknown setting {dotted!r}")
            out.update(_flatten(value, dotted + ".", source))
        elif dotted in BY_KEY:
            out[dotted] = value
        elif dotted in TOLERATED:
            log.warning("%s: %s is Synapse's and is not used here; ignored", source, dotted)
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
        values[key] = coerce(BY_KEY[key], value, "config file")
    for setting in SETTINGS:
        if setting.env_name in environ:
            raw: Any = environ[setting.env_name]
            if raw == "" and setting.nullable:
                raw = None
            values[setting.key] = coerce(setting, raw, setting.env_name)
    for key, value in flag_values.items():
        if value is not None:
            values[key] = coerce(BY_KEY[key], value, BY_KEY[key].flag_name)
    # Keys `rotate-key` retired, under those the operator configured.
    values["old_signing_keys"] = {**read_retired_keys(data_dir), **values["old_signing_keys"]}
    config = Config(
        data_dir=data_dir,
        **{key.replace(".", "_"): value for key, value in values.items()},
    )
    validate(config)
    return config


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
