"""X-Matrix request signing, header parsing and verification."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import keys
from federation.xmatrix import (
    XMatrixAuth,
    XMatrixError,
    parse_authorization,
    sign_request,
    verify_request,
)
from tests.unit.federation.conftest import KeyRing

KEY = keys.generate_signing_key("k1")
NOW = 1_700_000_000_000
URI = "/_matrix/federation/v1/send/txn1?x=%20y"
BODY = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {}}]}


def _ring(valid_until_ts: int = NOW + 1) -> KeyRing:
    ring = KeyRing()
    ring.add("origin.org", KEY, valid_until_ts)
    return ring


def _verify(header: Any, **overrides: Any) -> XMatrixAuth:
    args: dict[str, Any] = {
        "method": "PUT",
        "uri": URI,
        "content": BODY,
        "our_server_name": "dest.org",
        "lookup": _ring(),
        "now_ms": NOW,
    }
    args.update(overrides)
    return verify_request(header, **args)


def _header(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "method": "PUT",
        "uri": URI,
        "origin": "origin.org",
        "destination": "dest.org",
        "signing_key": KEY,
        "content": BODY,
    }
    args.update(overrides)
    return sign_request(**args)


def test_round_trip() -> None:
    header = _header()
    assert header.startswith('X-Matrix origin="origin.org",destination="dest.org",key="ed25519:k1"')
    auth = _verify(header)
    assert (auth.origin, auth.destination, auth.key_id) == ("origin.org", "dest.org", "ed25519:k1")


def test_round_trip_without_body() -> None:
    header = _header(method="GET", content=None)
    _verify(header, method="GET", content=None)
    with pytest.raises(XMatrixError):
        _verify(header, method="GET", content={})


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "POST"},
        {"uri": URI + "&z=1"},
        {"content": {"pdus": []}},
        {"our_server_name": "elsewhere.org"},
        {"now_ms": NOW + 2},  # key expired
        {"lookup": KeyRing()},  # unknown key
    ],
)
def test_tampering_and_context_mismatch(overrides: dict[str, Any]) -> None:
    with pytest.raises(XMatrixError):
        _verify(_header(), **overrides)


def test_wrong_destination_in_header() -> None:
    with pytest.raises(XMatrixError, match="not for us"):
        _verify(_header(destination="other.org"))


def test_wrong_signature() -> None:
    header = _header()
    other = _header(uri="/other")
    forged = header.rsplit("sig=", 1)[0] + "sig=" + other.rsplit("sig=", 1)[1]
    with pytest.raises(XMatrixError, match="does not verify"):
        _verify(forged)
    with pytest.raises(XMatrixError):
        _verify(header.rsplit("sig=", 1)[0] + 'sig="not base64!"')


def test_signed_by_another_key() -> None:
    impostor = keys.generate_signing_key("k1")
    with pytest.raises(XMatrixError):
        _verify(_header(signing_key=impostor))


def test_missing_destination_is_accepted_for_old_servers() -> None:
    header = _header()
    old_style = header.replace(',destination="dest.org"', "")
    auth = _verify(old_style)
    assert auth.destination is None


def test_parse_variants() -> None:
    expected = XMatrixAuth("origin.org:8448", "dest.org", "ed25519:k1", "c2ln")
    variants = [
        'X-Matrix origin="origin.org:8448",destination="dest.org",key="ed25519:k1",sig="c2ln"',
        "X-Matrix origin=origin.org:8448,destination=dest.org,key=ed25519:k1,sig=c2ln",
        'x-matrix  Origin = "origin.org:8448" , DESTINATION=dest.org, key="ed25519:k1",sig=c2ln',
        'X-Matrix sig="c2ln",key="ed25519:k1",destination="dest.org",origin="origin.org:8448",',
        'X-Matrix origin="origin.org:8448",destination="dest.org",key="ed25519:k1",sig="c2ln",'
        'future="ignored, really"',
        'X-Matrix origin="origin\\.org:8448",destination="dest.org",key="ed25519:k1",sig="c2ln"',
    ]
    for header in variants:
        assert parse_authorization(header) == expected, header
    padded = parse_authorization("X-Matrix origin=a.org,key=ed25519:k1,sig=c2ln==")
    assert padded.signature == "c2ln=="


@pytest.mark.parametrize(
    "header",
    [
        None,
        5,
        "",
        "Bearer abc",
        "X-Matrix",
        "X-Matrixorigin=a.org,key=ed25519:k1,sig=x",
        "X-Matrix key=ed25519:k1,sig=x",
        "X-Matrix origin=a.org,sig=x",
        "X-Matrix origin=a.org,key=ed25519:k1",
        'X-Matrix origin="a.org,key=ed25519:k1,sig=x',
        "X-Matrix origin=a.org,origin=b.org,key=ed25519:k1,sig=x",
        "X-Matrix origin=a.org key=ed25519:k1,sig=x",
        "X-Matrix origin,key=ed25519:k1,sig=x",
        "X-Matrix =a.org,key=ed25519:k1,sig=x",
        'X-Matrix origin="a org",key=ed25519:k1,sig=x',
        "X-Matrix origin=a.org,destination=b/c,key=ed25519:k1,sig=x",
        "X-Matrix origin=a.org,key=k1,sig=x",
        "X-Matrix origin=a.org,key=curve25519:k1,sig=x",
        "X-Matrix origin=a.org,key=ed25519:k 1,sig=x",
        'X-Matrix origin=a.org,key=ed25519:k1,sig="x\\',
        "X-Matrix origin=a.org,key=ed25519:k1,sig=x" + ",a=b" * 2000,
    ],
)
def test_hostile_headers(header: Any) -> None:
    with pytest.raises(XMatrixError):
        parse_authorization(header)


@given(st.text(max_size=300))
def test_parser_never_crashes(text: str) -> None:
    for header in (text, "X-Matrix " + text):
        try:
            parse_authorization(header)
        except XMatrixError:
            pass
