"""Canonical JSON: byte-exact against the spec's reference encoder, strictness, parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import canonical_json
from federation.canonical_json import MAX_SAFE_INTEGER, MIN_SAFE_INTEGER, CanonicalJsonError

safe_ints = st.integers(min_value=MIN_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def reference(value: Any) -> bytes:
    """The encoder given in the spec's appendix."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


@given(json_values)
def test_matches_reference_encoder(value: Any) -> None:
    assert canonical_json.encode(value) == reference(value)


@given(json_values)
def test_round_trip(value: Any) -> None:
    encoded = canonical_json.encode(value)
    assert canonical_json.loads(encoded) == value
    assert canonical_json.encode(canonical_json.loads(encoded)) == encoded


@given(st.dictionaries(st.text(), safe_ints))
def test_key_order_is_codepoint_order(value: dict[str, int]) -> None:
    decoded = json.loads(canonical_json.encode(value))
    assert list(decoded) == sorted(value)


def test_astral_and_bmp_keys_sort_by_codepoint() -> None:
    value = {"\U00010000": 1, "\uffff": 2, "\ue000": 3, "a": 4}
    assert canonical_json.encode(value) == reference(value)


def test_escapes() -> None:
    assert canonical_json.encode({"a": '\x00\x08\x1f\x7f\u2028/"\\'}) == (
        b'{"a":"\\u0000\\b\\u001f\x7f\xe2\x80\xa8/\\"\\\\"}'
    )


@pytest.mark.parametrize("value", [1.5, 1.0, {"a": [0.5]}, 2**53, -(2**53), {"a": 2**60}])
def test_strict_rejects_floats_and_big_ints(value: Any) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json.encode(value)


def test_strict_accepts_range_bounds() -> None:
    assert canonical_json.encode([MAX_SAFE_INTEGER, MIN_SAFE_INTEGER]) == (
        b"[9007199254740991,-9007199254740991]"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1.5}, b'{"a":1.5}'),
        ({"a": 1e16}, b'{"a":1e+16}'),  # as the canonicaljson library writes it
        ({"a": 2**53}, b'{"a":9007199254740992}'),
        ({"a": 2**70}, b'{"a":1180591620717411303424}'),
    ],
)
def test_legacy_mode_formats_like_canonicaljson(value: Any, expected: bytes) -> None:
    assert canonical_json.encode(value, strict=False) == expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {1: "a"}, {"a": b"bytes"}, {"a": {1, 2}}, object(), "\ud800"],
)
def test_unencodable_values(value: Any) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json.encode(value, strict=False)


def test_subclasses_encode_like_their_base() -> None:
    class Str(str):
        pass

    class Dict(dict[str, Any]):
        pass

    assert canonical_json.encode(Dict(b=Str("x"), a=(1, True))) == b'{"a":[1,true],"b":"x"}'


def test_deep_nesting_is_a_clean_error_or_encodes() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CanonicalJsonError):
        canonical_json.encode(deep)


def test_nesting_beyond_orjson_limit_still_encodes() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    assert canonical_json.encode(deep) == b"[" * 300 + b"1" + b"]" * 300


def test_check_reports_slow_path() -> None:
    assert canonical_json.check({"a": [1, "x", None]}) is False
    assert canonical_json.check({"a": 1.5}, strict=False) is True
    assert canonical_json.check({"a": 2**65}, strict=False) is True
    assert canonical_json.check({"a": 2**60}, strict=False) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-0", 0),
        ("-0.0", 0),
        ("1e10", 10_000_000_000),
        ("1E2", 100),
        ("1.0", 1),
        ("2.50e1", 25),
        ("1.5", 1.5),
        ("1e-2", 0.01),
        ("18446744073709551616", 18446744073709551616),
        ("1e300", 1e300),
    ],
)
def test_loads_integral_numbers(text: str, expected: Any) -> None:
    value = canonical_json.loads(f'{{"n": {text}}}')["n"]
    assert value == expected
    assert type(value) is type(expected)


def test_loads_integral_float_not_fooled_by_rounding() -> None:
    # Mathematically not an integer, although it rounds to 1.0 as a double.
    assert type(canonical_json.loads("[1.0000000000000001]")[0]) is float


@pytest.mark.parametrize(
    "text",
    ["", "{", "NaN", "[Infinity]", "[-Infinity]", "[1e400]", '{"a":1,}', b"\xff", "[01]"],
)
def test_loads_rejects_invalid(text: str | bytes) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json.loads(text)


def test_loads_huge_exponent_is_fast_and_rejected() -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json.loads("[1e999999999]")


def test_loads_deep_nesting_is_clean() -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json.loads("[" * 100_000 + "]" * 100_000)
