"""One test (or a few) per authorisation rule and per room-version difference; the
membership rules (rule 5) are in test_auth_rules_membership.py."""

from __future__ import annotations

import pytest

from federation.auth_rules import (
    CREATE_KEY,
    JOIN_RULES_KEY,
    MEMBER,
    POWER_LEVELS_KEY,
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_shape,
)
from federation.events import Event
from federation.power_levels import (
    CREATOR_POWER_LEVEL,
    required_level,
    required_level_in_state,
    user_level,
    user_level_in_state,
)
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

ALL_VERSIONS = [str(v) for v in range(1, 13)]


# -- rule 1: m.room.create ----------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_event_is_allowed(version: str) -> None:
    room = Room(version)
    allowed(room.create, room.main)


def test_create_with_prev_events_is_refused() -> None:
    room = Room("10")
    bad = room.main.build("$c2", "m.room.create", ALICE, {"creator": ALICE}, "")
    refused(bad, room.main, "prev events")


def test_create_room_id_must_be_on_senders_server() -> None:
    room = Room("10")
    bad = room.main.build("$c2", "m.room.create", BOB, {"creator": BOB}, "", prev=[], auth=[])
    refused(bad, room.main, "room id")


def test_v12_create_must_not_have_room_id() -> None:
    room = Room("12")
    bad = room.main.build(
        "$c2", "m.room.create", ALICE, {}, "", prev=[], auth=[], extra={"room_id": "!x"}
    )
    refused(bad, room.main, "has a room id")


def test_create_with_unknown_room_version_is_refused() -> None:
    room = Room("10")
    bad = room.main.build(
        "$c2",
        "m.room.create",
        ALICE,
        {"creator": ALICE, "room_version": "99"},
        "",
        prev=[],
        auth=[],
    )
    refused(bad, room.main, "unknown room version")


@pytest.mark.parametrize(("version", "ok"), [("10", False), ("11", True)])
def test_creator_property_required_until_v11(version: str, ok: bool) -> None:
    room = Room(version)
    event = room.main.build("$c2", "m.room.create", ALICE, {}, "", prev=[], auth=[])
    if ok:
        allowed(event, room.main)
    else:
        refused(event, room.main, "no creator")


@pytest.mark.parametrize(
    ("additional", "ok"),
    [([BOB, CAROL], True), ([], True), ("@bob:b.test", False), ([BOB, 5], False), (["bob"], False)],
)
def test_v12_additional_creators_must_be_user_ids(additional: object, ok: bool) -> None:
    room = Room("12", additional_creators=additional)
    if ok:
        allowed(room.create, room.main)
    else:
        refused(room.create, room.main, "additional_creators")


# -- rule 2: the auth events an event cites ---------------------------------------------


def _shape(event: Event, room: Room, rejected: frozenset[str] = frozenset()) -> None:
    check_auth_events_shape(event, [room.events[a] for a in event.auth_event_ids], rejected)


def test_auth_events_shape_accepts_the_selection() -> None:
    room = joined("10", BOB)
    message = room.main.build("$m", "m.room.message", BOB, {"body": "hi"})
    _shape(message, room)


def test_auth_events_shape_refuses_duplicates() -> None:
    room = joined("10", BOB)
    main = room.main
    second_pl = main.power_levels("pl2", ALICE, {ALICE: 100})
    auth = [main.state[CREATE_KEY], "$pl", second_pl.event_id, main.state[(MEMBER, BOB)]]
    message = main.build("$m", "m.room.message", BOB, {}, auth=auth)
    with pytest.raises(AuthError, match="duplicate"):
        _shape(message, room)


def test_auth_events_shape_refuses_extraneous_types() -> None:
    room = joined("10", BOB)
    main = room.main
    auth = [main.state[CREATE_KEY], main.state[JOIN_RULES_KEY], main.state[(MEMBER, BOB)]]
    message = main.build("$m", "m.room.message", BOB, {}, auth=auth)
    with pytest.raises(AuthError, match="not one this event needs"):
        _shape(message, room)


def test_auth_events_shape_refuses_rejected_and_unknown_events() -> None:
    room = joined("10", BOB)
    message = room.main.build("$m", "m.room.message", BOB, {})
    with pytest.raises(AuthError, match="rejected"):
        _shape(message, room, frozenset({"$pl"}))
    with pytest.raises(AuthError, match="unknown"):
        check_auth_events_shape(message, [], frozenset())


def test_auth_events_shape_refuses_other_rooms() -> None:
    room = joined("10", BOB)
    pdu = {**room.create.pdu, "room_id": "!other:a.test"}
    room.events["$other"] = Event(pdu, room.version, "$other")
    auth = ["$other", "$pl", room.main.state[(MEMBER, BOB)]]
    message = room.main.build("$m", "m.room.message", BOB, {}, auth=auth)
    with pytest.raises(AuthError, match="another room"):
        _shape(message, room)


def test_auth_events_shape_requires_create_before_v12() -> None:
    room = joined("10", BOB)
    main = room.main
    message = main.build("$m", "m.room.message", BOB, {}, auth=["$pl", main.state[(MEMBER, BOB)]])
    with pytest.raises(AuthError, match="no create event"):
        _shape(message, room)


def test_v12_auth_events_must_not_cite_create() -> None:
    room = joined("12", BOB)
    main = room.main
    fine = main.build("$m", "m.room.message", BOB, {})
    assert "$create" not in fine.auth_event_ids
    _shape(fine, room)
    cited = main.build("$m2", "m.room.message", BOB, {}, auth=[*fine.auth_event_ids, "$create"])
    with pytest.raises(AuthError, match="not one this event needs"):
        _shape(cited, room)
    with pytest.raises(AuthError, match="accepted create"):
        _shape(fine, room, frozenset({"$create"}))


# -- auth events selection ----------------------------------------------------------------


def test_auth_types_for_a_message() -> None:
    room = joined("10", BOB)
    message = room.main.build("$m", "m.room.message", BOB, {})
    assert auth_types_for_event(message) == {CREATE_KEY, POWER_LEVELS_KEY, (MEMBER, BOB)}
    v12 = joined("12", BOB).main.build("$m", "m.room.message", BOB, {})
    assert auth_types_for_event(v12) == {POWER_LEVELS_KEY, (MEMBER, BOB)}


def test_auth_types_for_membership() -> None:
    main = joined("10", BOB).main
    invite = main.build(
        "$i",
        MEMBER,
        BOB,
        {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}},
        CAROL,
    )
    assert auth_types_for_event(invite) == {
        CREATE_KEY,
        POWER_LEVELS_KEY,
        JOIN_RULES_KEY,
        (MEMBER, BOB),
        (MEMBER, CAROL),
        ("m.room.third_party_invite", "tok"),
    }
    leave = main.build("$l", MEMBER, BOB, {"membership": "leave"}, CAROL)
    assert JOIN_RULES_KEY not in auth_types_for_event(leave)
    knock = main.build("$k", MEMBER, CAROL, {"membership": "knock"}, CAROL)
    assert JOIN_RULES_KEY in auth_types_for_event(knock)


@pytest.mark.parametrize(("version", "included"), [("7", False), ("8", True)])
def test_auth_types_include_authorising_user_from_v8(version: str, included: bool) -> None:
    main = joined(version, BOB).main
    join = main.build(
        "$j", MEMBER, CAROL, {"membership": "join", "join_authorised_via_users_server": BOB}, CAROL
    )
    assert ((MEMBER, BOB) in auth_types_for_event(join)) is included


# -- rule 2 (v12): the room id names the create event ------------------------------------


def test_v12_room_id_must_match_create_event() -> None:
    room = joined("12", BOB)
    message = room.main.build("$m", "m.room.message", BOB, {}, extra={"room_id": "!other"})
    refused(message, room.main, "room id")
    allowed(room.main.build("$m2", "m.room.message", BOB, {}), room.main)


def test_missing_create_event_is_refused() -> None:
    room = joined("10", BOB)
    message = room.main.build("$m", "m.room.message", BOB, {})
    state = room.main.auth_state()
    del state[CREATE_KEY]
    with pytest.raises(AuthError, match="no create event"):
        check_auth(message, state)


# -- rule 3: m.federate -------------------------------------------------------------------


def test_unfederated_room_refuses_other_servers() -> None:
    room = Room("10", **{"m.federate": False})
    main = room.main
    main.member("aj", ALICE, "join")
    main.join_rules("jr", ALICE, "public")
    refused(main.build("$bj", MEMBER, BOB, {"membership": "join"}, BOB), main, "federate")
    local = "@alice2:a.test"
    allowed(main.build("$lj", MEMBER, local, {"membership": "join"}, local), main)


# -- rule 4 (rooms 1 to 5): m.room.aliases ------------------------------------------------


def test_aliases_special_case_until_v6() -> None:
    room = new_room("5")
    # Bob is not even in the room: only his server name matters.
    ok = room.main.build("$a", "m.room.aliases", BOB, {"aliases": []}, "b.test")
    allowed(ok, room.main)
    refused(room.main.build("$a2", "m.room.aliases", BOB, {}, "a.test"), room.main, "domain")
    v6 = new_room("6")
    refused(v6.main.build("$a", "m.room.aliases", BOB, {}, "b.test"), v6.main, "not in the room")


# -- rules 6 to 9: membership, third party invites, required level, @ state keys ----------


def test_sender_must_be_joined() -> None:
    room = new_room("10")
    refused(room.main.build("$m", "m.room.message", BOB, {}), room.main, "not in the room")
    allowed(room.main.build("$m2", "m.room.message", ALICE, {}), room.main)


def test_third_party_invite_event_needs_invite_level() -> None:
    room = joined("10", BOB, invite=50)
    main = room.main
    refused(main.build("$t", "m.room.third_party_invite", BOB, {}, "tok"), main, "invite")
    allowed(main.build("$t2", "m.room.third_party_invite", ALICE, {}, "tok"), main)


def test_required_power_level() -> None:
    room = joined("10", BOB, events={"m.room.topic": 0, "m.custom": 10})
    main = room.main
    refused(main.build("$n", "m.room.name", BOB, {}, ""), main, "too low")  # state_default 50
    allowed(main.build("$t", "m.room.topic", BOB, {}, ""), main)
    refused(main.build("$c", "m.custom", BOB, {}), main, "too low")
    allowed(main.build("$m", "m.room.message", BOB, {}), main)


def test_required_level_without_power_levels_event() -> None:
    assert required_level("m.room.name", True, None) == 50
    assert required_level("m.room.message", False, None) == 0


def test_levels_read_from_a_state_map() -> None:
    state = joined("9", BOB, admins={BOB: "40"}, events={"m.room.topic": "20"}).main.auth_state()
    assert user_level_in_state(BOB, state) == 40  # strings still count before v10
    assert user_level_in_state(CAROL, state) == 0
    assert required_level_in_state("m.room.topic", "", state) == 20
    assert required_level_in_state("m.room.name", "", state) == 50
    assert required_level_in_state("m.room.message", None, state) == 0


def test_state_keys_starting_with_at_belong_to_that_user() -> None:
    room = joined("10", BOB, state_default=0)
    main = room.main
    allowed(main.build("$s", "m.custom", BOB, {}, BOB), main)
    refused(main.build("$s2", "m.custom", BOB, {}, CAROL), main, "reserved")
    refused(main.build("$s3", "m.custom", ALICE, {}, BOB), main, "reserved")


# -- rule 10: m.room.power_levels ---------------------------------------------------------


def _pl(main: Branch, sender: str, **content: object) -> Event:
    return main.build("$newpl", "m.room.power_levels", sender, content, "")


def test_power_levels_users_must_be_user_ids_with_integer_levels() -> None:
    main = joined("9", BOB).main
    allowed(_pl(main, ALICE, users={ALICE: 100, BOB: "50"}), main)
    refused(_pl(main, ALICE, users={ALICE: 100, "bob": 50}), main, "users entry")
    refused(_pl(main, ALICE, users={ALICE: 100, BOB: "fifty"}), main, "users entry")
    refused(_pl(main, ALICE, users=[ALICE]), main, "object")


def test_v10_power_levels_must_be_integers() -> None:
    main = joined("10", BOB).main
    refused(_pl(main, ALICE, users={ALICE: 100, BOB: "50"}), main, "users entry")
    refused(_pl(main, ALICE, users={ALICE: 100}, ban="50"), main, "integer")
    refused(_pl(main, ALICE, users={ALICE: 100}, kick=True), main, "integer")
    refused(_pl(main, ALICE, users={ALICE: 100}, events={"m.x": "1"}), main, "integers")
    refused(_pl(main, ALICE, users={ALICE: 100}, notifications=[]), main, "integers")
    allowed(_pl(main, ALICE, users={ALICE: 100}, ban=60, events={"m.x": 1}), main)


def test_first_power_levels_event_is_allowed() -> None:
    room = Room("10")
    room.main.member("aj", ALICE, "join")
    allowed(_pl(room.main, ALICE, users={ALICE: 100, BOB: 100}, ban=1000), room.main)


def test_power_levels_changes_limited_by_sender_level() -> None:
    room = joined("10", BOB, CAROL, admins={BOB: 50, CAROL: 20}, events={"m.big": 80})
    main = room.main
    users = {ALICE: 100, BOB: 50, CAROL: 20}
    big = {"m.big": 80}
    # Bob needs the power levels event's own level (state_default 50): he has it.
    allowed(_pl(main, BOB, users={**users, CAROL: 40}, events=big), main)
    refused(_pl(main, BOB, users={**users, CAROL: 60}, events=big), main, "raise a user")
    refused(_pl(main, BOB, users={**users, ALICE: 10}, events=big), main, "at or above")
    refused(_pl(main, BOB, users={**users, DAVE: 51}, events=big), main, "raise a user")
    allowed(_pl(main, BOB, users={**users, BOB: 10}, events=big), main)  # demoting oneself
    refused(_pl(main, BOB, users=users, events=big, ban=60), main, "above the sender")
    refused(_pl(main, BOB, users=users), main, "events levels")  # removes m.big: 80
    refused(_pl(main, BOB, users=users, events={**big, "m.x": 70}), main, "events")
    allowed(_pl(main, BOB, users=users, events={**big, "m.x": 50}), main)


def test_users_entry_at_senders_level_cannot_be_removed() -> None:
    room = joined("10", BOB, CAROL, admins={BOB: 50, CAROL: 50})
    main = room.main
    refused(_pl(main, BOB, users={ALICE: 100, BOB: 50}), main, "at or above")


@pytest.mark.parametrize(("version", "checked"), [("5", False), ("6", True)])
def test_notifications_levels_checked_from_v6(version: str, checked: bool) -> None:
    room = joined(version, BOB, admins={BOB: 50})
    main = room.main
    event = _pl(main, BOB, users={ALICE: 100, BOB: 50}, notifications={"room": 90})
    refused(event, main, "notifications") if checked else allowed(event, main)


# -- room v12: privileged creators ---------------------------------------------------------


def test_v12_creators_cannot_appear_in_power_levels() -> None:
    room = Room("12", additional_creators=[BOB])
    main = room.main
    main.member("aj", ALICE, "join")
    refused(_pl(main, ALICE, users={ALICE: 100}), main, "creators")
    refused(_pl(main, ALICE, users={BOB: 100}), main, "creators")
    allowed(_pl(main, ALICE, users={CAROL: 100}), main)


def test_v12_creators_have_infinite_power() -> None:
    room = Room("12", additional_creators=[BOB])
    main = room.main
    main.member("aj", ALICE, "join")
    main.power_levels("pl", ALICE, {CAROL: 100, DAVE: 100}, ban=1000)
    main.join_rules("jr", ALICE, "public")
    for name, user in (("bj", BOB), ("cj", CAROL), ("dj", DAVE)):
        main.member(name, user, "join")
    state = main.auth_state()
    create, power_levels = state[CREATE_KEY], state[POWER_LEVELS_KEY]
    assert user_level(BOB, create, power_levels) == CREATOR_POWER_LEVEL
    assert user_level(CAROL, create, power_levels) == 100
    allowed(main.build("$b", MEMBER, BOB, {"membership": "ban"}, CAROL), main)
    refused(main.build("$b2", MEMBER, CAROL, {"membership": "ban"}, DAVE), main, "ban")
    refused(main.build("$k", MEMBER, CAROL, {"membership": "leave"}, ALICE), main, "kick")
    refused(main.build("$k2", MEMBER, ALICE, {"membership": "leave"}, BOB), main, "kick")


def test_v11_creator_is_the_sender_without_power_levels() -> None:
    room = Room("11")
    room.main.member("aj", ALICE, "join")
    state = room.main.auth_state()
    assert user_level(ALICE, state[CREATE_KEY], None) == 100
    assert user_level(BOB, state[CREATE_KEY], None) == 0
    old = Room("10")
    old.create.pdu["content"]["creator"] = BOB
    assert user_level(ALICE, old.create, None) == 0
    assert user_level(BOB, old.create, None) == 100


# -- rule 11 (rooms 1 and 2): m.room.redaction ------------------------------------------


@pytest.mark.parametrize(("version", "checked"), [("1", True), ("2", True), ("3", False)])
def test_redaction_domain_rule_in_v1_and_v2(version: str, checked: bool) -> None:
    room = joined(version, BOB)
    main = room.main
    own_server = main.build(
        "$r:b.test", "m.room.redaction", BOB, {}, extra={"redacts": "$x:b.test"}
    )
    allowed(own_server, main)
    other = main.build("$r2:b.test", "m.room.redaction", BOB, {}, extra={"redacts": "$x:a.test"})
    refused(other, main, "redact") if checked else allowed(other, main)
    moderator = main.build(
        "$r3:a.test", "m.room.redaction", ALICE, {}, extra={"redacts": "$x:b.test"}
    )
    allowed(moderator, main)
