"""Unpadded base64 in both alphabets, and rejection of anything else."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import unpadded_base64
from federation.unpadded_base64 import InvalidBase64


@given(st.binary(), st.booleans())
def test_round_trip(data: bytes, urlsafe: bool) -> None:
    encoded = unpadded_base64.encode(data, urlsafe=urlsafe)
    assert "=" not in encoded
    assert unpadded_base64.decode(encoded, urlsafe=urlsafe) == data
    assert unpadded_base64.decode(encoded.encode(), urlsafe=urlsafe) == data


@given(st.binary())
def test_padded_input_accepted(data: bytes) -> None:
    assert unpadded_base64.decode(base64.b64encode(data).decode()) == data
    assert unpadded_base64.decode(base64.urlsafe_b64encode(data).decode(), urlsafe=True) == data


def test_alphabets() -> None:
    data = b"\xfb\xff\xbf"
    assert unpadded_base64.encode(data) == "+/+/"
    assert unpadded_base64.encode(data, urlsafe=True) == "-_-_"


@pytest.mark.parametrize(
    ("text", "urlsafe"),
    [
        ("-_-_", False),
        ("+/+/", True),
        ("Zm9vY", False),  # a length no encoding produces
        ("Zm9v!", False),
        ("Zm 9v", False),
        ("Zm9v\n", False),
        ("日本", False),
        (b"\xff\xfe", False),
        ("Z===", False),
    ],
)
def test_rejects_bad_input(text: str | bytes, urlsafe: bool) -> None:
    with pytest.raises(InvalidBase64):
        unpadded_base64.decode(text, urlsafe=urlsafe)


@pytest.mark.parametrize("value", [None, 12, ["Zm9v"]])
def test_rejects_wrong_types(value: object) -> None:
    with pytest.raises(InvalidBase64):
        unpadded_base64.decode(value)  # type: ignore[arg-type]
