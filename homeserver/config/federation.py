"""Federation settings in Synapse's shape: `old_signing_keys`, the keys this server
signed with before, published as expired so that what they signed still verifies, and
`allow_public_rooms_over_federation`, whether other servers may read our room directory
(off, as in Synapse: a server's directory is its own users' unless it says otherwise).

`homeserver rotate-key` records the key it retires in the data directory
(`old_signing_keys.yaml`, the same shape); those are merged under the setting's own
entries when the configuration is loaded, so an operator need not copy them over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from federation.keys import ED25519, InvalidKey, decode_verify_key, parse_key_id
from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting

RETIRED_KEYS_NAME = "old_signing_keys.yaml"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "old_signing_keys",
        dict,
        {},
        "keys this server signed with before, as Synapse writes them: key id ->"
        " {key: public key, expired_ts: ms}; keys retired by `homeserver rotate-key` are"
        " added from the data directory",
        flag=False,
    ),
    Setting(
        "allow_public_rooms_over_federation",
        bool,
        False,
        "let other servers (and so their users) read our published room list",
    ),
)


def retired_keys_path(data_dir: Path) -> Path:
    return data_dir / RETIRED_KEYS_NAME


def read_retired_keys(data_dir: Path) -> dict[str, Any]:
    """The keys `rotate-key` retired, {} when none were."""
    path = retired_keys_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def validate(config: Config) -> None:
    for key_id, entry in config.old_signing_keys.items():
        try:
            algorithm, _ = parse_key_id(key_id)
        except InvalidKey:
            raise ConfigError(f"old_signing_keys: {key_id!r} is not a key id") from None
        if algorithm != ED25519:
            raise ConfigError(f"old_signing_keys: {key_id} is not an ed25519 key")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ConfigError(f"old_signing_keys: {key_id} needs its public key as `key`")
        try:
            decode_verify_key(entry["key"])
        except InvalidKey:
            raise ConfigError(f"old_signing_keys: {key_id}: `key` is not an ed25519 key") from None
        expired = entry.get("expired_ts")
        if type(expired) is not int or not 0 <= expired < 2**53:
            raise ConfigError(f"old_signing_keys: {key_id} needs `expired_ts` in milliseconds")
