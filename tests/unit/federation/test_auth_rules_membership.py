"""Rule 5 of the authorisation rules, m.room.member: joins (with the invite, knock and
restricted join rules), invites (third-party ones too), leaves, kicks, bans and knocks,
per room-version difference."""

from __future__ import annotations

import nacl.signing
import pytest

from federation import canonical_json, unpadded_base64
from federation.auth_rules import MEMBER
from federation.events import Event
from tests.unit.federation.dag import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    Branch,
    Room,
    allowed,
    joined,
    new_room,
    refused,
)

# -- rule 5: m.room.member ----------------------------------------------------------------


def test_member_without_membership_is_refused() -> None:
    room = new_room("10")
    refused(room.main.build("$j", MEMBER, BOB, {}, BOB), room.main, "membership")
    refused(room.main.build("$j2", MEMBER, BOB, {"membership": "join"}), room.main, "state key")


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_creator_first_join(version: str) -> None:
    room = Room(version)
    join = room.main.build("$j", MEMBER, ALICE, {"membership": "join"}, ALICE)
    allowed(join, room.main)
    bob = room.main.build("$b", MEMBER, BOB, {"membership": "join"}, BOB)
    refused(bob, room.main)


def test_creator_comes_from_content_before_v11() -> None:
    # The sender of the create event is not the creator when content says otherwise.
    room = Room("10", creator=ALICE)
    room.create.pdu["content"]["creator"] = "@other:a.test"
    refused(room.main.build("$j", MEMBER, ALICE, {"membership": "join"}, ALICE), room.main)


def test_join_on_behalf_of_someone_else_is_refused() -> None:
    room = new_room("10")
    refused(room.main.build("$j", MEMBER, BOB, {"membership": "join"}, CAROL), room.main, "behalf")


def test_join_public_room_and_banned_user() -> None:
    room = joined("10", BOB)
    main = room.main
    allowed(main.build("$cj", MEMBER, CAROL, {"membership": "join"}, CAROL), main)
    main.member("ban", ALICE, "ban", CAROL)
    refused(main.build("$cj2", MEMBER, CAROL, {"membership": "join"}, CAROL), main, "banned")


def test_join_invite_only_room_needs_invite() -> None:
    room = new_room("10", "invite")
    main = room.main
    refused(main.build("$bj", MEMBER, BOB, {"membership": "join"}, BOB), main, "invite only")
    main.member("inv", ALICE, "invite", BOB)
    allowed(main.build("$bj2", MEMBER, BOB, {"membership": "join"}, BOB), main)


@pytest.mark.parametrize(("version", "ok"), [("6", False), ("7", True)])
def test_knock_join_rule_admits_invited_users_from_v7(version: str, ok: bool) -> None:
    room = new_room(version, "knock")
    main = room.main
    main.member("inv", ALICE, "invite", BOB)
    join = main.build("$bj", MEMBER, BOB, {"membership": "join"}, BOB)
    allowed(join, main) if ok else refused(join, main)


def _restricted_join(main: Branch, via: str | None) -> Event:
    content: dict[str, object] = {"membership": "join"}
    if via is not None:
        content["join_authorised_via_users_server"] = via
    return main.build("$cj", MEMBER, CAROL, content, CAROL)


@pytest.mark.parametrize(("version", "ok"), [("7", False), ("8", True), ("12", True)])
def test_restricted_join_authorised_by_member_from_v8(version: str, ok: bool) -> None:
    room = joined(version, BOB, join_rule="restricted")
    main = room.main
    join = _restricted_join(main, BOB)
    allowed(join, main) if ok else refused(join, main)


def test_restricted_join_authoriser_checks() -> None:
    room = joined("9", BOB, join_rule="restricted", invite=50)
    main = room.main
    refused(_restricted_join(main, None), main, "authorising user")
    refused(_restricted_join(main, BOB), main, "may not invite")
    refused(_restricted_join(main, DAVE), main, "not in the room")
    allowed(_restricted_join(main, ALICE), main)
    main.member("inv", ALICE, "invite", CAROL)
    allowed(_restricted_join(main, None), main)


@pytest.mark.parametrize(("version", "ok"), [("9", False), ("10", True)])
def test_knock_restricted_join_rule_from_v10(version: str, ok: bool) -> None:
    room = joined(version, BOB, join_rule="knock_restricted")
    main = room.main
    join = _restricted_join(main, BOB)
    allowed(join, main) if ok else refused(join, main)


def test_unknown_join_rule_refuses_joins() -> None:
    room = new_room("10", "private")
    refused(room.main.build("$bj", MEMBER, BOB, {"membership": "join"}, BOB), room.main)


def test_invite_rules() -> None:
    room = joined("10", BOB, invite=50)
    main = room.main

    def invite(sender: str, target: str) -> Event:
        return main.build("$i", MEMBER, sender, {"membership": "invite"}, target)

    allowed(invite(ALICE, CAROL), main)
    refused(invite(BOB, CAROL), main, "may not invite")
    refused(invite(DAVE, CAROL), main, "not in the room")
    refused(invite(ALICE, BOB), main, "join")
    main.member("ban", ALICE, "ban", CAROL)
    refused(invite(ALICE, CAROL), main, "ban")


class _ThirdPartyInvite:
    """An identity server's key, an m.room.third_party_invite, and a way to redeem it."""

    def __init__(self, main: Branch, sender: str = ALICE) -> None:
        self.key = nacl.signing.SigningKey.generate()
        public = unpadded_base64.encode(bytes(self.key.verify_key))
        self.main = main
        main.send(
            "$tpi",
            "m.room.third_party_invite",
            sender,
            {"display_name": "c...", "public_keys": [{"public_key": public}]},
            "tok",
        )

    def invite(
        self,
        sender: str = ALICE,
        mxid: str = CAROL,
        token: str = "tok",
        key: nacl.signing.SigningKey | None = None,
    ) -> Event:
        signing_key = self.key if key is None else key
        signed: dict[str, object] = {"mxid": mxid, "token": token}
        signature = signing_key.sign(canonical_json.encode(signed)).signature
        signed["signatures"] = {"id.test": {"ed25519:0": unpadded_base64.encode(signature)}}
        content = {"membership": "invite", "third_party_invite": {"signed": signed}}
        return self.main.build("$i", MEMBER, sender, content, CAROL)


def test_third_party_invite_is_redeemed_with_a_valid_signature() -> None:
    room = joined("10", BOB)
    tpi = _ThirdPartyInvite(room.main)
    allowed(tpi.invite(), room.main)
    refused(tpi.invite(key=nacl.signing.SigningKey.generate()), room.main, "signature")
    refused(tpi.invite(mxid=DAVE), room.main, "another user")
    refused(tpi.invite(token="nope"), room.main, "no m.room.third_party_invite")
    refused(tpi.invite(sender=BOB), room.main, "someone else")
    room.main.member("ban", ALICE, "ban", CAROL)
    refused(tpi.invite(), room.main, "banned")


def test_third_party_invite_without_signed_is_refused() -> None:
    room = joined("10", BOB)
    content = {"membership": "invite", "third_party_invite": {}}
    refused(room.main.build("$i", MEMBER, ALICE, content, CAROL), room.main, "not signed")


def test_leave_own_membership() -> None:
    room = joined("7", BOB, join_rule="knock")
    main = room.main
    allowed(main.build("$l", MEMBER, BOB, {"membership": "leave"}, BOB), main)
    refused(main.build("$l2", MEMBER, CAROL, {"membership": "leave"}, CAROL), main, "not in")
    main.member("knock", CAROL, "knock")
    allowed(main.build("$l3", MEMBER, CAROL, {"membership": "leave"}, CAROL), main)


def test_kick_rules() -> None:
    room = joined("10", BOB, CAROL, admins={BOB: 50, CAROL: 50})
    main = room.main

    def kick(sender: str, target: str) -> Event:
        return main.build("$k", MEMBER, sender, {"membership": "leave"}, target)

    allowed(kick(ALICE, BOB), main)
    refused(kick(BOB, CAROL), main, "kick")  # equal power
    refused(kick(DAVE, CAROL), main, "not in the room")


def test_unban_needs_ban_level() -> None:
    room = joined("10", BOB, admins={BOB: 60}, ban=70, kick=50)
    main = room.main
    main.member("ban", ALICE, "ban", CAROL)
    refused(main.build("$u", MEMBER, BOB, {"membership": "leave"}, CAROL), main, "unban")
    allowed(main.build("$u2", MEMBER, ALICE, {"membership": "leave"}, CAROL), main)


def test_ban_rules() -> None:
    room = joined("10", BOB, CAROL, admins={BOB: 50, CAROL: 50})
    main = room.main

    def ban(sender: str, target: str) -> Event:
        return main.build("$b", MEMBER, sender, {"membership": "ban"}, target)

    allowed(ban(ALICE, BOB), main)
    allowed(ban(BOB, DAVE), main)  # a user never in the room can be banned
    refused(ban(BOB, CAROL), main, "ban")
    refused(ban(BOB, ALICE), main, "ban")
    refused(ban(DAVE, CAROL), main, "not in the room")


@pytest.mark.parametrize(("version", "ok"), [("6", False), ("7", True), ("12", True)])
def test_knock_from_v7(version: str, ok: bool) -> None:
    room = new_room(version, "knock")
    main = room.main
    knock = main.build("$k", MEMBER, BOB, {"membership": "knock"}, BOB)
    allowed(knock, main) if ok else refused(knock, main, "unknown membership")


def test_knock_rules() -> None:
    room = joined("10", BOB, join_rule="knock")
    main = room.main
    refused(main.build("$k", MEMBER, BOB, {"membership": "knock"}, BOB), main, "join")
    refused(main.build("$k2", MEMBER, BOB, {"membership": "knock"}, CAROL), main, "behalf")
    invite_only = new_room("10", "invite")
    refused(
        invite_only.main.build("$k", MEMBER, BOB, {"membership": "knock"}, BOB),
        invite_only.main,
        "knocking",
    )
    restricted = new_room("10", "knock_restricted")
    allowed(restricted.main.build("$k", MEMBER, BOB, {"membership": "knock"}, BOB), restricted.main)


def test_unknown_membership_is_refused() -> None:
    room = joined("10", BOB)
    bad = room.main.build("$x", MEMBER, BOB, {"membership": "dance"}, BOB)
    refused(bad, room.main, "unknown membership")
