"""Configuration precedence, validation and the generated file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from homeserver.config import ConfigError, generated_config_text, load_config, read_config_file


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    file_values = {"port": 9000, "server_name": "file.example", "log_level": "debug"}
    environ = {"HOMESERVER_PORT": "9001", "HOMESERVER_SERVER_NAME": "env.example"}
    config = load_config(tmp_path, file_values, environ, {"port": 9002, "server_name": None})
    assert config.port == 9002
    assert config.server_name == "env.example"
    assert config.log_level == "debug"
    assert config.bind == "127.0.0.1"


def test_nested_keys_and_env_names(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("database:\n  url: postgresql://db/x\n  pool_size: 3\n")
    config = load_config(tmp_path, read_config_file(path), {}, {})
    assert config.database_url == "postgresql://db/x"
    assert config.database_pool_size == 3
    env = {"HOMESERVER_DATABASE_URL": "postgresql://other/y", "HOMESERVER_OPEN_REGISTRATION": "1"}
    config = load_config(tmp_path, read_config_file(path), env, {})
    assert config.database_url == "postgresql://other/y"
    assert config.open_registration is True


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("bogus: 1\n", "unknown setting 'bogus'"),
        ("database:\n  bogus: 1\n", "unknown setting 'database.bogus'"),
        ("port: 1.5\n", "port must be int"),
        ("open_registration: maybe\n", "open_registration must be bool"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("port: 70000\n", "port must be between 1 and 65535"),
        ("default_room_version: '99'\n", "default_room_version '99' is not supported"),
        ("log_level: loud\n", "log_level must be one of"),
        ("server_name: null\n", "server_name must not be empty"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path, read_config_file(path), {}, {})


def test_generated_config_loads_to_the_defaults(tmp_path: Path) -> None:
    text = generated_config_text("example.org")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert isinstance(yaml.safe_load(text), dict)
    config = load_config(tmp_path, read_config_file(path), {}, {})
    assert config.server_name == "example.org"
    assert config == load_config(tmp_path, {"server_name": "example.org"}, {}, {})


def test_unusable_federation_ca_file_stops_the_start(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for path in (not_pem, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match=r"federation\.ca_file: cannot load"):
            load_config(tmp_path, {"federation.ca_file": str(path)}, {}, {})


def test_durations_are_read_in_synapses_format() -> None:
    from homeserver.config import Duration, Setting
    from homeserver.config.setting import coerce

    setting = Setting("turn_user_lifetime", Duration, 3_600_000, "lifetime", flag=False)
    assert coerce(setting, "1h", "file") == 3_600_000
    assert coerce(setting, "10s", "file") == 10_000
    assert coerce(setting, "500ms", "file") == 500
    assert coerce(setting, "2d", "file") == 2 * 86_400_000
    assert coerce(setting, 250, "file") == 250  # a bare number is milliseconds, as in Synapse
    assert coerce(setting, "90", "env") == 90
    for bad in ("ten seconds", "-5s", True, [1], "5 parsecs"):
        with pytest.raises(ConfigError, match="turn_user_lifetime"):
            coerce(setting, bad, "file")


def test_structured_settings_are_taken_whole_and_read_as_json_from_the_environment() -> None:
    from homeserver.config import Setting
    from homeserver.config.setting import coerce

    providers = Setting("oidc_providers", list, [], "providers", flag=False)
    block = Setting("email", dict, {}, "email", flag=False)
    assert coerce(providers, [{"idp_id": "x"}], "file") == [{"idp_id": "x"}]
    assert coerce(providers, '[{"idp_id": "y"}]', "HOMESERVER_OIDC_PROVIDERS") == [{"idp_id": "y"}]
    assert coerce(block, {"smtp_host": "mail"}, "file") == {"smtp_host": "mail"}
    with pytest.raises(ConfigError, match="must be JSON"):
        coerce(block, "smtp_host=mail", "HOMESERVER_EMAIL")
    with pytest.raises(ConfigError, match="must be a dict"):
        coerce(block, [1, 2], "file")


@pytest.mark.parametrize(
    "key",
    [
        "federation.ip_range_whitelist",
        "push.ip_range_whitelist",
        "media.url_preview.ip_range_whitelist",
    ],
)
def test_address_ranges_are_checked_at_start(tmp_path: Path, key: str) -> None:
    *heads, name = key.split(".")
    block: dict[str, object] = {name: ["10.0.0.0/8", "not-a-range"]}
    for head in reversed(heads):
        block = {head: block}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(block))
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(key)}: 'not-a-range' is not an address range$"
    ):
        load_config(tmp_path, read_config_file(path), {}, {})
