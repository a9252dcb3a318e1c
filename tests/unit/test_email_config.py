"""The `email` block: Synapse's block loads as pasted; mistakes stop the start with one
line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from homeserver.config import ConfigError, load_config, read_config_file
from homeserver.config import email as email_config

SYNAPSE_BLOCK = """
registrations_require_3pid:
  - email
email:
  smtp_host: mail.example.org
  smtp_port: 587
  smtp_user: matrix
  smtp_pass: hunter2
  require_transport_security: true
  notif_from: "Your Friendly %(app)s homeserver <noreply@example.org>"
  app_name: Example Chat
  enable_notifs: true
  notif_for_new_users: false
  notif_delay_before_mail: 2m
  client_base_url: https://chat.example.org
  validation_token_lifetime: 15m
  subjects:
    password_reset: "[%(server_name)s] Forgot your password?"
"""


def test_a_synapse_block_loads_as_pasted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SYNAPSE_BLOCK)
    config = load_config(tmp_path, read_config_file(path), {}, {})
    assert email_config.mail_enabled(config)
    assert email_config.smtp_port(config) == 587
    assert email_config.sender(config) == (
        "Your Friendly Example Chat homeserver <noreply@example.org>"
    )
    assert config.email_notif_delay_before_mail == 120_000
    assert config.email_validation_token_lifetime == 15 * 60_000
    assert config.registrations_require_3pid == ("email",)
    assert not config.email_notif_for_new_users
    assert email_config.subjects(config)["password_reset"] == (
        "[%(server_name)s] Forgot your password?"
    )
    assert email_config.subjects(config)["email_validation"] == (
        "[%(server_name)s] Validate your email"
    )


def test_defaults_leave_mail_off(tmp_path: Path) -> None:
    config = load_config(tmp_path, {}, {}, {})
    assert not email_config.mail_enabled(config)
    with_tls = load_config(
        tmp_path, {"email.notif_from": "a@b.org", "email.force_tls": True}, {}, {}
    )
    assert email_config.smtp_port(with_tls) == 465


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ({"smtp_host": "mail.example.org"}, r"email\.notif_from is required"),
        ({"notif_from": "not an address <>"}, r"email\.notif_from is not an email address"),
        ({"notif_from": "a@b.org", "force_tls": True, "enable_tls": False}, "force_tls"),
        ({"notif_from": "a@b.org", "notif_delay_before_mail": "soon"}, "must be a duration"),
        ({"notif_from": "a@b.org", "smtp_port": 70000}, "smtp_port"),
        ({"notif_from": "a@b.org", "client_base_url": "chat.example.org"}, "client_base_url"),
        ({"notif_from": "a@b.org", "no_such_key": 1}, "unknown setting 'email.no_such_key'"),
        ({"notif_from": "a@b.org", "subjects": {"greeting": "hi"}}, "unknown subject 'greeting'"),
        (
            {"notif_from": "a@b.org", "subjects": {"password_reset": "%(nobody)s"}},
            r"email\.subjects\.password_reset: not a subject template",
        ),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path: Path, block: dict[str, object], error: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"email": block}))
    with pytest.raises(ConfigError, match=error) as caught:
        load_config(tmp_path, read_config_file(path), {}, {})
    assert "\n" not in str(caught.value)


def test_required_email_needs_mail(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registrations_require_3pid"):
        load_config(tmp_path, {"registrations_require_3pid": ["email"]}, {}, {})


def test_synapse_template_settings_start_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Synapse block with its own mail templates still starts (the built-in mails are
    sent), and the operator is told those keys are not used."""
    path = tmp_path / "homeserver.yaml"
    block = yaml.safe_load(SYNAPSE_BLOCK)
    block["email"]["template_dir"] = "/etc/matrix/templates"
    block["email"]["password_reset_template_html"] = "reset.html"
    path.write_text(yaml.safe_dump(block))
    with caplog.at_level("WARNING"):
        values = read_config_file(path)
    config = load_config(tmp_path, values, {}, {})
    assert config.email_smtp_host == "mail.example.org"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "email.template_dir" in warned and "email.password_reset_template_html" in warned
    path.write_text(yaml.safe_dump({"email": {"template_dri": "/typo"}}))
    with pytest.raises(ConfigError, match=r"unknown setting 'email\.template_dri'"):
        read_config_file(path)
