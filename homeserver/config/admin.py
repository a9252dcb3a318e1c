"""Settings of running a server: shared-secret registration, the server-notices sender,
and the Prometheus metrics listener. Synapse's names where Synapse has the setting."""

from __future__ import annotations

from typing import Any

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting

# Synapse's `server_notices` keys, and what each defaults to here.
SERVER_NOTICES_DEFAULTS: dict[str, Any] = {
    "system_mxid_localpart": "notices",
    "system_mxid_display_name": "Server Notices",
    "system_mxid_avatar_url": None,
    "room_name": "Server Notices",
    "room_avatar_url": None,
    "room_topic": None,
    "auto_join": False,
}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "registration_shared_secret",
        str,
        None,
        "secret for /_synapse/admin/v1/register (register_new_matrix_user, playbooks)",
        nullable=True,
        flag=False,
    ),
    Setting(
        "server_notices",
        dict,
        {},
        "Synapse's server_notices block: the notices sender's localpart, name and avatar",
        flag=False,
    ),
    Setting(
        "admin_contact",
        str,
        None,
        "Synapse's admin_contact: a mailto: address or a Matrix ID, published as the"
        " m.role.admin contact in /.well-known/matrix/support unless support.contacts is set",
        nullable=True,
        flag=False,
    ),
    Setting(
        "support.contacts",
        list,
        [],
        "contacts for /.well-known/matrix/support: [{matrix_id, email_address, role}, ...]",
        flag=False,
    ),
    Setting(
        "support.page",
        str,
        None,
        "the support_page URL published in /.well-known/matrix/support",
        nullable=True,
        flag=False,
    ),
    Setting("metrics.bind", str, "127.0.0.1", "address of the Prometheus /metrics listener"),
    Setting(
        "metrics.port",
        int,
        None,
        "port of the Prometheus /metrics listener (none when unset)",
        nullable=True,
    ),
)


def server_notices(config: Config) -> dict[str, Any]:
    """The server_notices block with every key present."""
    return {**SERVER_NOTICES_DEFAULTS, **config.server_notices}


def support_contacts(config: Config) -> list[dict[str, str]]:
    """The contacts /.well-known/matrix/support lists: the configured ones, else the one
    Synapse's admin_contact names."""
    if config.support_contacts:
        return [dict(contact) for contact in config.support_contacts]
    contact = config.admin_contact
    if not contact:
        return []
    if contact.startswith("@"):
        return [{"matrix_id": contact, "role": "m.role.admin"}]
    return [{"email_address": contact.removeprefix("mailto:"), "role": "m.role.admin"}]


def _validate_support(config: Config) -> None:
    for contact in config.support_contacts:
        if not isinstance(contact, dict) or not isinstance(contact.get("role"), str):
            raise ConfigError("support.contacts: each contact is a mapping with a role")
        if not (contact.get("matrix_id") or contact.get("email_address")):
            raise ConfigError("support.contacts: each contact has a matrix_id or email_address")
        if not set(contact) <= {"matrix_id", "email_address", "role"}:
            raise ConfigError("support.contacts: keys are matrix_id, email_address and role")
    if config.support_page is not None and not config.support_page.startswith(
        ("https://", "http://")
    ):
        raise ConfigError("support.page must be an http(s) URL")


def validate(config: Config) -> None:
    _validate_support(config)
    unknown = set(config.server_notices) - set(SERVER_NOTICES_DEFAULTS)
    if unknown:
        raise ConfigError(f"server_notices: unknown keys {', '.join(sorted(unknown))}")
    localpart = server_notices(config)["system_mxid_localpart"]
    if not isinstance(localpart, str) or not localpart:
        raise ConfigError("server_notices.system_mxid_localpart must be a non-empty string")
    if config.metrics_port is not None:
        if not 0 < config.metrics_port < 65536:
            raise ConfigError(
                f"metrics.port must be between 1 and 65535, got {config.metrics_port}"
            )
        if config.metrics_port == config.port:
            raise ConfigError("metrics.port must differ from port: metrics are not for clients")
    if config.registration_shared_secret == "":
        raise ConfigError("registration_shared_secret must not be empty when set")
