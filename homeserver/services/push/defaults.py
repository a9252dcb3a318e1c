"""The spec's server-default push rules ("Predefined rules"), for one user.

Pure data: the rules depend only on the user's id (mentions of the user, invites
to them) and localpart (the deprecated user-name content rule). `.m.rule.master`
comes before the user's own override rules; every other default rule comes after
the user's rules of its kind.
"""

from __future__ import annotations

from typing import Any

from federation.types import JsonDict

SOUND_DEFAULT: JsonDict = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT: JsonDict = {"set_tweak": "highlight"}


def localpart_of(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(
    rule_id: str, conditions: list[JsonDict], actions: list[Any], enabled: bool = True
) -> JsonDict:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": enabled,
        "conditions": conditions,
        "actions": actions,
    }


def master_rule() -> JsonDict:
    """Disabled by default; enabled, it silences everything below it."""
    return _rule(".m.rule.master", [], [], enabled=False)


def override_rules(user_id: str) -> list[JsonDict]:
    """The default override rules after the user's own (the master rule is apart)."""
    mention: list[JsonDict] = [
        {
            "kind": "event_property_contains",
            "key": "content.m\\.mentions.user_ids",
            "value": user_id,
        }
    ]
    room_mention: list[JsonDict] = [
        {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
        {"kind": "sender_notification_permission", "key": "room"},
    ]
    return [
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", SOUND_DEFAULT],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(".m.rule.is_user_mention", mention, ["notify", SOUND_DEFAULT, HIGHLIGHT]),
        _rule(
            ".m.rule.contains_display_name",
            [{"kind": "contains_display_name"}],
            ["notify", SOUND_DEFAULT, HIGHLIGHT],
        ),
        _rule(".m.rule.is_room_mention", room_mention, ["notify", HIGHLIGHT]),
        _rule(
            ".m.rule.roomnotif",
            [
                {"kind": "sender_notification_permission", "key": "room"},
                _match("content.body", "@room"),
            ],
            ["notify", HIGHLIGHT],
        ),
        _rule(
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", HIGHLIGHT],
        ),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        _rule(
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": "content.m\\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
    ]


def content_rules(user_id: str) -> list[JsonDict]:
    return [
        {
            "rule_id": ".m.rule.contains_user_name",
            "default": True,
            "enabled": True,
            "pattern": localpart_of(user_id),
            "actions": ["notify", SOUND_DEFAULT, HIGHLIGHT],
        }
    ]


def underride_rules() -> list[JsonDict]:
    one_to_one = {"kind": "room_member_count", "is": "2"}
    return [
        _rule(
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [one_to_one, _match("type", "m.room.encrypted")],
            ["notify", SOUND_DEFAULT],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [one_to_one, _match("type", "m.room.message")],
            ["notify", SOUND_DEFAULT],
        ),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]


def default_rules(user_id: str) -> dict[str, list[JsonDict]]:
    """Every server-default rule by kind, in priority order (the master rule first)."""
    return {
        "override": [master_rule(), *override_rules(user_id)],
        "content": content_rules(user_id),
        "postcontent": [],
        "room": [],
        "sender": [],
        "underride": underride_rules(),
    }
