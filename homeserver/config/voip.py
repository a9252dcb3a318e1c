"""Voice and video: TURN credentials, delayed events (MSC4140) and MatrixRTC discovery
(MSC4143), under Synapse's top-level names so an operator can paste their block."""

from __future__ import annotations

from typing import Any

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Duration, Setting

_TURN_SCHEMES = ("turn:", "turns:", "stun:", "stuns:")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "turn_uris",
        tuple,
        (),
        "TURN/STUN server URIs handed to clients for calls (turn:host:3478?transport=udp, ...);"
        " none: /voip/turnServer answers an empty object",
        flag=False,
    ),
    Setting(
        "turn_shared_secret",
        str,
        None,
        "the secret shared with coturn (static-auth-secret): credentials are made per user"
        " and expire; preferred to turn_username/turn_password when both are set",
        nullable=True,
        flag=False,
    ),
    Setting(
        "turn_username",
        str,
        None,
        "a fixed TURN username, for servers without the shared-secret scheme",
        nullable=True,
        flag=False,
    ),
    Setting(
        "turn_password",
        str,
        None,
        "the fixed TURN password that goes with turn_username",
        nullable=True,
        flag=False,
    ),
    Setting(
        "turn_user_lifetime",
        Duration,
        60 * 60 * 1000,
        "how long shared-secret TURN credentials stay valid (e.g. 1h)",
        flag=False,
    ),
    Setting(
        "turn_allow_guests",
        bool,
        True,
        "give TURN credentials to guest accounts too",
        flag=False,
    ),
    Setting(
        "max_event_delay_duration",
        Duration,
        24 * 60 * 60 * 1000,
        "longest delay a client may schedule an event with (MSC4140 delayed events, which"
        " MatrixRTC calls need); 0 turns delayed events off",
        flag=False,
    ),
    Setting(
        "extra_well_known_client_content",
        dict,
        {},
        "more keys for /.well-known/matrix/client, such as org.matrix.msc4143.rtc_foci",
        flag=False,
    ),
    Setting(
        "matrix_rtc.transports",
        list,
        [],
        "MatrixRTC transports (MSC4143), e.g. [{type: livekit, livekit_service_url: ...}];"
        " also advertised as org.matrix.msc4143.rtc_foci in the client well-known unless"
        " extra_well_known_client_content sets that",
        flag=False,
    ),
)


def validate(config: Config) -> None:
    for uri in config.turn_uris:
        if not uri.startswith(_TURN_SCHEMES):
            raise ConfigError(f"turn_uris: {uri!r} is not a turn:, turns:, stun: or stuns: URI")
    if (config.turn_username is None) != (config.turn_password is None):
        raise ConfigError("turn_username and turn_password go together")
    if config.turn_uris and config.turn_user_lifetime < 1000:
        raise ConfigError("turn_user_lifetime must be at least 1s")
    if "m.homeserver" in config.extra_well_known_client_content:
        raise ConfigError("extra_well_known_client_content: m.homeserver comes from public_baseurl")
    for transport in config.matrix_rtc_transports:
        if not _is_transport(transport):
            raise ConfigError("matrix_rtc.transports: each transport is a mapping with a type")


def _is_transport(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("type"), str)
