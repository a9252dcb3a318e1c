"""Checks on received PDUs: format and size limits, signatures, content hashes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import hashing, keys
from federation.builder import build_event
from federation.pdu_checks import InvalidPdu, check_format, check_pdu, signing_servers
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from federation.signing import SignatureError, sign_bytes
from tests.unit.federation.conftest import KeyRing

V = KNOWN_ROOM_VERSIONS
KEY = keys.generate_signing_key("a_1")
OTHER_KEY = keys.generate_signing_key("b_1")
TS = 1_700_000_000_000


def _ring(valid_until_ts: int = 2**53 - 1) -> KeyRing:
    ring = KeyRing()
    ring.add("example.org", KEY, valid_until_ts)
    ring.add("other.org", OTHER_KEY, valid_until_ts)
    return ring


def _pdu(version: RoomVersion = V["10"], **overrides: Any) -> dict[str, Any]:
    legacy = version.identifier in ("1", "2")
    refs = [["$p:example.org", {"sha256": "abc"}]] if legacy else ["$p"]
    fields: dict[str, Any] = {
        "event_type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": "!room:example.org",
        "content": {"body": "hi"},
        "prev_events": refs,
        "auth_events": refs,
        "depth": 7,
        "origin_server_ts": TS,
    }
    fields.update(overrides)
    return build_event(version, KEY, **fields).pdu


def _resign(pdu: dict[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Re-sign after a test edits a protected field, so only the edit is under test."""
    pdu = copy.deepcopy(pdu)
    message = hashing.redacted_signing_bytes(pdu, version)
    pdu["signatures"] = {"example.org": {KEY.key_id: sign_bytes(message, KEY)}}
    return pdu


def test_valid_pdu() -> None:
    pdu = _pdu()
    checked = check_pdu(pdu, V["10"], _ring())
    assert not checked.redacted
    assert checked.event.pdu is pdu
    assert checked.event.event_id == hashing.compute_event_id(pdu, V["10"])


def test_content_hash_mismatch_redacts() -> None:
    pdu = _pdu()
    pdu["content"]["body"] = "tampered"  # not covered by the signature
    checked = check_pdu(pdu, V["10"], _ring())
    assert checked.redacted
    assert checked.event.pdu["content"] == {}
    assert "unsigned" not in checked.event.pdu
    assert checked.event.event_id == hashing.compute_event_id(pdu, V["10"])
    assert pdu["content"]["body"] == "tampered"  # input untouched


@pytest.mark.parametrize("claimed", ["", "!!!", "AAAA", 5])
def test_unreadable_content_hash(claimed: Any) -> None:
    pdu = _pdu()
    pdu["hashes"]["sha256"] = claimed
    if not isinstance(claimed, str):
        with pytest.raises(InvalidPdu):
            check_pdu(pdu, V["10"], _ring())
        return
    assert check_pdu(_resign(pdu, V["10"]), V["10"], _ring()).redacted


def test_protected_field_tampering_breaks_signature() -> None:
    pdu = _pdu()
    pdu["depth"] = 8
    with pytest.raises(SignatureError, match="bad signature"):
        check_pdu(pdu, V["10"], _ring())


def test_missing_or_unknown_signature() -> None:
    pdu = _pdu()
    with pytest.raises(SignatureError, match="known, valid key"):
        check_pdu(pdu, V["10"], KeyRing())
    pdu["signatures"] = {"other.org": pdu["signatures"]["example.org"]}
    with pytest.raises(SignatureError, match=r"not signed by example\.org"):
        check_pdu(pdu, V["10"], _ring())


def test_key_validity_enforced_from_v5() -> None:
    expired = _ring(valid_until_ts=TS - 1)
    for number in ("1", "2", "3", "4"):
        check_pdu(_pdu(V[number]), V[number], expired)
    for number in ("5", "6", "10", "12"):
        with pytest.raises(SignatureError):
            check_pdu(_pdu(V[number]), V[number], expired)
        check_pdu(_pdu(V[number]), V[number], _ring(valid_until_ts=TS))


def test_v1_event_id_server_must_sign() -> None:
    pdu = _pdu(V["1"])
    assert signing_servers(pdu, V["1"]) == {"example.org"}
    pdu["event_id"] = "$abc:other.org"
    pdu = _resign(pdu, V["1"])
    assert signing_servers(pdu, V["1"]) == {"example.org", "other.org"}
    with pytest.raises(SignatureError, match=r"other\.org"):
        check_pdu(pdu, V["1"], _ring())
    message = hashing.redacted_signing_bytes(pdu, V["1"])
    pdu["signatures"]["other.org"] = {OTHER_KEY.key_id: sign_bytes(message, OTHER_KEY)}
    assert check_pdu(pdu, V["1"], _ring()).event.event_id == "$abc:other.org"


def _restricted_join(version: RoomVersion) -> dict[str, Any]:
    return _pdu(
        version,
        event_type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join", "join_authorised_via_users_server": "@bob:other.org"},
    )


def test_restricted_join_authoriser_must_sign() -> None:
    assert signing_servers(_restricted_join(V["7"]), V["7"]) == {"example.org"}
    for number in ("8", "9", "10", "11", "12"):
        version = V[number]
        pdu = _restricted_join(version)
        assert signing_servers(pdu, version) == {"example.org", "other.org"}
        with pytest.raises(SignatureError, match=r"other\.org"):
            check_pdu(pdu, version, _ring())
        message = hashing.redacted_signing_bytes(pdu, version)
        pdu["signatures"]["other.org"] = {OTHER_KEY.key_id: sign_bytes(message, OTHER_KEY)}
        check_pdu(pdu, version, _ring())


def test_restricted_join_bad_authoriser() -> None:
    pdu = _pdu(
        V["10"],
        event_type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join", "join_authorised_via_users_server": 5},
    )
    with pytest.raises(InvalidPdu, match="join_authorised_via_users_server"):
        check_pdu(pdu, V["10"], _ring())


def test_size_limit() -> None:
    check_format(_pdu(content={"body": "x" * 65000}), V["10"])
    with pytest.raises(InvalidPdu, match="65536"):
        check_format(_pdu(content={"body": "x" * 65536}), V["10"])
    big_unsigned = _pdu()
    big_unsigned["unsigned"] = {"x": "y" * 65536}
    with pytest.raises(InvalidPdu, match="65536"):
        check_format(big_unsigned, V["10"])


@pytest.mark.parametrize("key", ["type", "state_key", "sender", "room_id", "event_id"])
def test_id_length_limits(key: str) -> None:
    pdu = _pdu()
    fits = "@" + "é" * 126 + ":x"  # 255 bytes, 129 characters
    assert len(fits.encode()) == 255
    pdu[key] = fits
    pdu["sender"] = pdu["sender"] if key != "sender" else fits
    check_format(pdu, V["10"])
    pdu[key] = "@" + "é" * 127 + ":x"  # 257 bytes
    with pytest.raises(InvalidPdu, match=key):
        check_format(pdu, V["10"])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("type", 5),
        ("type", None),
        ("sender", ["@a:x"]),
        ("sender", "no-server"),
        ("sender", "@a:bad server"),
        ("origin_server_ts", "5"),
        ("origin_server_ts", True),
        ("content", []),
        ("depth", -1),
        ("depth", True),
        ("depth", 1.0),
        ("depth", 2**53),
        ("hashes", {}),
        ("hashes", {"sha256": 1}),
        ("hashes", "x"),
        ("signatures", []),
        ("signatures", {"example.org": "x"}),
        ("signatures", {"example.org": {"ed25519:a_1": 5}}),
        ("unsigned", 5),
        ("state_key", None),
        ("state_key", 5),
        ("room_id", 5),
        ("redacts", 5),
        ("prev_events", "$p"),
        ("prev_events", [5]),
        ("prev_events", [["$p", {"sha256": "x"}]]),
        ("prev_events", ["$p"] * 21),
        ("auth_events", ["$a"] * 11),
        ("auth_events", None),
    ],
)
def test_field_types(key: str, value: Any) -> None:
    pdu = _pdu()
    pdu[key] = value
    with pytest.raises(InvalidPdu):
        check_pdu(pdu, V["10"], _ring())


@pytest.mark.parametrize(
    "key", ["type", "sender", "origin_server_ts", "content", "depth", "hashes", "signatures",
            "room_id", "prev_events", "auth_events"],
)  # fmt: skip
def test_required_fields(key: str) -> None:
    pdu = _pdu()
    del pdu[key]
    with pytest.raises(InvalidPdu, match=key):
        check_format(pdu, V["10"])


def test_limits_at_the_edge_are_accepted() -> None:
    check_format(_pdu(prev_events=["$p"] * 20, auth_events=["$a"] * 10), V["10"])
    check_format(_pdu(depth=2**53 - 1), V["10"])
    check_format(_pdu(V["5"], depth=2**63 - 1), V["5"])


def test_legacy_ref_shapes() -> None:
    pdu = _pdu(V["1"])
    check_format(pdu, V["1"])
    for bad in (
        ["$p"],
        [["$p"]],
        [["$p", "hash"]],
        [["$p", {"sha256": 1}]],
        [[1, {"sha256": "x"}]],
    ):
        broken = dict(pdu, prev_events=bad)
        with pytest.raises(InvalidPdu, match="prev_events"):
            check_format(broken, V["1"])
    del pdu["event_id"]
    with pytest.raises(InvalidPdu, match="event_id"):
        check_format(pdu, V["1"])


def test_canonical_json_strictness() -> None:
    check_pdu(_pdu(V["5"], content={"n": 1.5, "big": 2**60}), V["5"], _ring())
    for content in ({"n": 1.5}, {"n": 2**53}):
        pdu = _pdu(V["5"], content=content)
        with pytest.raises(InvalidPdu):
            check_format(pdu, V["6"])


def test_v12_create_without_room_id_but_others_need_it() -> None:
    create = _pdu(
        V["12"],
        event_type="m.room.create",
        state_key="",
        room_id=None,
        content={"room_version": "12"},
        prev_events=[],
        auth_events=[],
    )
    check_pdu(create, V["12"], _ring())
    message = dict(_pdu(V["12"]))
    del message["room_id"]
    with pytest.raises(InvalidPdu, match="room_id"):
        check_format(message, V["12"])


@pytest.mark.parametrize("pdu", [None, [], "x", 5, {}])
def test_non_objects_and_empty(pdu: Any) -> None:
    with pytest.raises(InvalidPdu):
        check_pdu(pdu, V["10"], _ring())


def test_unencodable_pdu() -> None:
    pdu = _pdu()
    pdu["content"] = {"x": "\ud800"}
    with pytest.raises(InvalidPdu):
        check_pdu(pdu, V["10"], _ring())


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
_FIELDS = (
    "type sender room_id state_key content depth hashes signatures unsigned prev_events "
    "auth_events origin_server_ts event_id redacts"
).split()


@given(
    st.sampled_from(list(V.values())),
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4),
)
def test_hostile_fields_only_raise_clean_errors(version: RoomVersion, changes: Any) -> None:
    pdu = _pdu(version)
    pdu.update(changes)
    try:
        check_pdu(pdu, version, _ring())
    except (InvalidPdu, SignatureError):
        pass
