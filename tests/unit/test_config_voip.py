"""A Synapse operator's voice-and-video block, pasted as it is, configures us."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import ConfigError, load_config, read_config_file

SYNAPSE_BLOCK = """
turn_uris:
  - "turn:turn.example.org:3478?transport=udp"
  - "turns:turn.example.org:5349?transport=tcp"
turn_shared_secret: "n0t-s0-s3cret"
turn_user_lifetime: 1h
turn_allow_guests: false
max_event_delay_duration: 10s
extra_well_known_client_content:
  org.matrix.msc4143.rtc_foci:
    - type: livekit
      livekit_service_url: https://rtc.example.org/livekit/jwt
matrix_rtc:
  transports:
    - type: livekit
      livekit_service_url: https://rtc.example.org/livekit/jwt
"""


def test_synapse_block_is_read(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text(SYNAPSE_BLOCK)
    config = load_config(tmp_path, read_config_file(path), {}, {})
    assert config.turn_uris == (
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
    )
    assert config.turn_shared_secret == "n0t-s0-s3cret"
    assert config.turn_user_lifetime == 3_600_000
    assert config.turn_allow_guests is False
    assert config.max_event_delay_duration == 10_000
    focus = {"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt"}
    assert config.extra_well_known_client_content == {"org.matrix.msc4143.rtc_foci": [focus]}
    assert config.matrix_rtc_transports == [focus]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("turn_uris: ['http://turn.example.org']\n", "is not a turn:"),
        ("turn_username: bob\n", "turn_username and turn_password go together"),
        ("turn_user_lifetime: forever\n", "must be a duration"),
        ("extra_well_known_client_content: {m.homeserver: {}}\n", "m.homeserver"),
        ("matrix_rtc:\n  transports: [livekit]\n", "each transport is a mapping"),
    ],
)
def test_bad_voip_settings_are_named(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path, read_config_file(path), {}, {})
