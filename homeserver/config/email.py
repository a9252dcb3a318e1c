"""The `email` block, under Synapse's names, so an operator moving from Synapse pastes
theirs: the SMTP server mail goes through, the From address, and email notifications of
unread messages; and the registration settings that concern addresses
(`registrations_require_3pid`, `enable_3pid_changes`).

Mail is on when `email.notif_from` is set (Synapse refuses an `email` block without
it); a block whose other settings are set without it stops the start.
"""

from __future__ import annotations

from email.utils import parseaddr
from urllib.parse import urlsplit

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Duration, Setting

# Synapse's mail subjects, which `email.subjects` may override one by one.
DEFAULT_SUBJECTS: dict[str, str] = {
    "message_from_person_in_room": "[%(app)s] You have a message on %(app)s from %(person)s"
    " in the %(room)s room...",
    "message_from_person": "[%(app)s] You have a message on %(app)s from %(person)s...",
    "messages_from_person": "[%(app)s] You have messages on %(app)s from %(person)s...",
    "messages_in_room": "[%(app)s] You have messages on %(app)s in the %(room)s room...",
    "messages_in_room_and_others": "[%(app)s] You have messages on %(app)s in the %(room)s"
    " room and others...",
    "messages_from_person_and_others": "[%(app)s] You have messages on %(app)s from"
    " %(person)s and others...",
    "invite_from_person": "[%(app)s] %(person)s has invited you to chat on %(app)s...",
    "invite_from_person_to_room": "[%(app)s] %(person)s has invited you to join the %(room)s"
    " room on %(app)s...",
    "invite_from_person_to_space": "[%(app)s] %(person)s has invited you to join the"
    " %(space)s space on %(app)s...",
    "password_reset": "[%(server_name)s] Password reset",
    "email_validation": "[%(server_name)s] Validate your email",
    "email_already_in_use": "[%(server_name)s] Email already in use",
}
_SAMPLE = {"app": "a", "person": "p", "room": "r", "space": "s", "server_name": "n"}

SETTINGS: tuple[Setting, ...] = (
    Setting("email.smtp_host", str, "localhost", "SMTP server that sends mail", flag=False),
    Setting(
        "email.smtp_port",
        int,
        None,
        "its port (default 465 with force_tls, else 25)",
        nullable=True,
        flag=False,
    ),
    Setting("email.smtp_user", str, None, "SMTP login, if any", nullable=True, flag=False),
    Setting("email.smtp_pass", str, None, "SMTP password", nullable=True, flag=False),
    Setting("email.force_tls", bool, False, "TLS from the start (SMTPS, port 465)", flag=False),
    Setting(
        "email.require_transport_security",
        bool,
        False,
        "refuse to send unless the server offers STARTTLS",
        flag=False,
    ),
    Setting("email.enable_tls", bool, True, "use STARTTLS when the server offers it", flag=False),
    Setting(
        "email.notif_from",
        str,
        None,
        "From address of every mail, e.g. 'Your %(app)s homeserver <noreply@example.org>';"
        " setting it turns mail on",
        nullable=True,
        flag=False,
    ),
    Setting("email.app_name", str, "Matrix", "name of the app, in mails", flag=False),
    Setting(
        "email.enable_notifs",
        bool,
        False,
        "let users get mail about unread messages (an `email` pusher)",
        flag=False,
    ),
    Setting(
        "email.notif_for_new_users",
        bool,
        True,
        "with enable_notifs: accounts registered with an email get notifications on",
        flag=False,
    ),
    Setting(
        "email.notif_delay_before_mail",
        Duration,
        10 * 60 * 1000,
        "how long a notification stays unread before it is mailed (e.g. 10m)",
        flag=False,
    ),
    Setting(
        "email.client_base_url",
        str,
        None,
        "web client that links in notification mails open (default: matrix.to links)",
        nullable=True,
        flag=False,
    ),
    Setting(
        "email.validation_token_lifetime",
        Duration,
        60 * 60 * 1000,
        "how long a link mailed to validate an address works (e.g. 1h)",
        flag=False,
    ),
    Setting(
        "email.subjects",
        dict,
        {},
        "mail subjects replacing Synapse's defaults, by Synapse's names (e.g. password_reset)",
        flag=False,
    ),
    Setting(
        "email.riot_base_url",
        str,
        None,
        "older name of client_base_url",
        nullable=True,
        flag=False,
    ),
    Setting(
        "registrations_require_3pid",
        tuple,
        (),
        "third-party ids registration requires: [email] asks for a verified address",
        flag=False,
    ),
    Setting(
        "enable_3pid_changes",
        bool,
        True,
        "let users add and remove email addresses on their accounts",
        flag=False,
    ),
)

# Synapse's keys for its own mail templates (and the TLS name override): accepted so a
# pasted block starts, with a warning, while mails keep the built-in templates.
TOLERATED: tuple[str, ...] = tuple(
    f"email.{name}"
    for name in (
        "template_dir",
        "tlsname",
        "invite_client_location",
        "notif_template_html",
        "notif_template_text",
        "password_reset_template_html",
        "password_reset_template_text",
        "password_reset_template_success_html",
        "password_reset_template_failure_html",
        "registration_template_html",
        "registration_template_text",
        "registration_template_success_html",
        "registration_template_failure_html",
        "add_threepid_template_html",
        "add_threepid_template_text",
        "add_threepid_template_success_html",
        "add_threepid_template_failure_html",
    )
)

_DEFAULTS = {s.key.replace(".", "_"): s.default for s in SETTINGS}


def mail_enabled(config: Config) -> bool:
    return config.email_notif_from is not None


def smtp_port(config: Config) -> int:
    if config.email_smtp_port is not None:
        return config.email_smtp_port
    return 465 if config.email_force_tls else 25


def sender(config: Config) -> str:
    """The From header, with `%(app)s` replaced by the app name as Synapse does."""
    assert config.email_notif_from is not None
    return config.email_notif_from.replace("%(app)s", config.email_app_name)


def subjects(config: Config) -> dict[str, str]:
    return {**DEFAULT_SUBJECTS, **config.email_subjects}


def client_base_url(config: Config) -> str | None:
    return config.email_client_base_url or config.email_riot_base_url


def _check_subjects(config: Config) -> None:
    for key, value in config.email_subjects.items():
        if key not in DEFAULT_SUBJECTS:
            raise ConfigError(f"email.subjects: unknown subject {key!r}")
        try:
            if not isinstance(value, str):
                raise TypeError
            value % _SAMPLE
        except (TypeError, ValueError, KeyError):
            raise ConfigError(f"email.subjects.{key}: not a subject template") from None


def validate(config: Config) -> None:
    if not mail_enabled(config):
        changed = [
            name
            for name, default in _DEFAULTS.items()
            if name.startswith("email_") and getattr(config, name) != default
        ]
        if changed:
            raise ConfigError(
                f"email.notif_from is required to send mail (email.{changed[0][6:]} is set)"
            )
        if "email" in config.registrations_require_3pid:
            raise ConfigError("registrations_require_3pid: [email] needs email.notif_from set")
        return
    if not parseaddr(sender(config))[1]:
        raise ConfigError("email.notif_from is not an email address")
    if not 0 < smtp_port(config) < 65536:
        raise ConfigError("email.smtp_port must be between 1 and 65535")
    if config.email_force_tls and not config.email_enable_tls:
        raise ConfigError("email.force_tls requires email.enable_tls to be true")
    if config.email_require_transport_security and not config.email_enable_tls:
        raise ConfigError("email.require_transport_security requires email.enable_tls to be true")
    if config.email_validation_token_lifetime < 1000:
        raise ConfigError("email.validation_token_lifetime must be at least 1s")
    _check_subjects(config)
    base = client_base_url(config)
    if base is not None and urlsplit(base).scheme not in ("http", "https"):
        raise ConfigError("email.client_base_url must be an http(s) URL")
    for medium in config.registrations_require_3pid:
        if medium != "email":
            raise ConfigError(f"registrations_require_3pid: {medium!r} is not supported")
