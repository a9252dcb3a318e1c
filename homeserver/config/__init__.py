"""Server configuration: one table of settings, read from defaults, a YAML file,
`HOMESERVER_<NAME>` environment variables and command-line flags, in that order.

Every setting is declared once (`settings.py`, or the module of its concern in this
package); the CLI flags, the environment variable names, the generated config file and
the validation all come from it, so they cannot drift apart.

Adding a concern's settings (e.g. `oidc.py`): declare `SETTINGS: tuple[Setting, ...]` there
and, when cross-setting checks are needed, `validate(config: Config) -> None`; add the
tuple to `settings.SETTINGS`, the check to `validation.validate`, and one typed field per
setting to `model.Config` (with a default). Structured Synapse blocks use the types
`dict` and `list` (taken whole, JSON in the environment, no command-line flag) and
durations the type `Duration` (milliseconds; Synapse's `10s`, `1h` format accepted).
"""

from homeserver.config.loading import (
    generated_config_text,
    load_config,
    read_config_file,
    resolve_data_dir,
)
from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Duration, Setting, parse_duration_ms
from homeserver.config.settings import RATE_LIMIT_DEFAULTS, SETTINGS

__all__ = [
    "RATE_LIMIT_DEFAULTS",
    "SETTINGS",
    "Config",
    "ConfigError",
    "Duration",
    "Setting",
    "generated_config_text",
    "load_config",
    "parse_duration_ms",
    "read_config_file",
    "resolve_data_dir",
]
