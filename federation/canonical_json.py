"""Canonical JSON (spec appendix "Canonical JSON"): the exact bytes that are hashed and signed.

Keys sorted by codepoint, no insignificant whitespace, UTF-8, and (in strict mode, which
room versions 6+ require) only integers in [-(2**53)+1, 2**53-1]. orjson produces exactly
these bytes for plain JSON values and is an order of magnitude faster than the stdlib, so
it is the fast path; values it cannot format identically to the rest of the network (floats
in legacy rooms, huge integers) go through the `canonicaljson` library, as Synapse does.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any

import canonicaljson
import orjson

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53) + 1

# orjson formats integers in this range itself; outside it only the stdlib can.
_ORJSON_MIN_INT = -(2**63)
_ORJSON_MAX_INT = 2**64 - 1


class CanonicalJsonError(ValueError):
    """The value has no canonical JSON form, or the text is not acceptable JSON."""


def encode(value: object, *, strict: bool = True) -> bytes:
    """Canonical JSON bytes of `value`.

    `strict` (room versions with `strict_canonical_json`, and anything new we sign)
    rejects floats and integers outside the interoperable range; non-strict mode accepts
    them and formats them as the `canonicaljson` library does, for legacy rooms.
    """
    return encode_checked(value, needs_slow_path=check(value, strict=strict))


def check(value: object, *, strict: bool = True) -> bool:
    """Validate `value` for canonical encoding; returns whether it needs the slow encoder.

    Callers that encode several parts of one already-checked object pass the result to
    `encode_checked` so the (comparatively costly) walk over the value happens once.
    """
    try:
        return _scan(value, strict)
    except RecursionError:
        raise CanonicalJsonError("JSON nested too deeply") from None


def encode_checked(value: object, *, needs_slow_path: bool = False) -> bytes:
    """Encode a value that `check` accepted (or any part of one), skipping validation."""
    if not needs_slow_path:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            pass  # e.g. nesting deeper than orjson allows: the stdlib decides
    try:
        return canonicaljson.encode_canonical_json(value)
    except (ValueError, TypeError, RecursionError, UnicodeError) as e:
        raise CanonicalJsonError(f"cannot encode as canonical JSON: {e}") from None


def _scan(value: object, strict: bool) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return False
    if kind is int:
        return _scan_int(value, strict)  # type: ignore[arg-type]
    if kind is dict:
        slow = False
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise CanonicalJsonError(f"object key {key!r} is not a string")
            item_kind = type(item)
            if item_kind is str or (
                item_kind is int and MIN_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
            ):
                continue
            if _scan(item, strict):
                slow = True
        return slow
    if kind is list or kind is tuple:
        slow = False
        for item in value:  # type: ignore[attr-defined]
            if _scan(item, strict):
                slow = True
        return slow
    if kind is float:
        if strict:
            raise CanonicalJsonError(f"float {value!r} is not allowed in canonical JSON")
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise CanonicalJsonError(f"{value!r} is not a JSON number")
        return True
    return _scan_subclass(value, strict)


def _scan_int(value: int, strict: bool) -> bool:
    if MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return False
    if strict:
        raise CanonicalJsonError(f"integer {value} is outside the canonical JSON range")
    return not _ORJSON_MIN_INT <= value <= _ORJSON_MAX_INT


def _scan_subclass(value: object, strict: bool) -> bool:
    """Subclasses of the JSON types (str enums, int enums, ...) encode like their base."""
    if isinstance(value, bool | str):
        return False
    if isinstance(value, int):
        return _scan_int(int(value), strict)
    if isinstance(value, dict):
        return _scan(dict(value), strict)
    if isinstance(value, list | tuple):
        return _scan(list(value), strict)
    raise CanonicalJsonError(f"{type(value).__name__} is not a JSON type")


def loads(data: bytes | str) -> Any:
    """Parse JSON, reading integral numbers written as floats (`1e10`, `-0.0`) as ints.

    The spec's canonical form of `{"b": 1e10}` is `{"b":10000000000}`, so a number's
    value, not its spelling, decides whether it is an integer. NaN and Infinity are
    rejected. orjson parses the common float-free document; any float sends the text
    through the stdlib parser, which sees each number's exact spelling.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CanonicalJsonError(f"invalid JSON: {e}") from None
    if not _has_float(value):
        return value
    try:
        return json.loads(data, parse_float=_parse_float, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise CanonicalJsonError(f"invalid JSON: {e}") from None


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        return any(type(v) not in (str, int) and _has_float(v) for v in value.values())
    if kind is list:
        return any(type(v) not in (str, int) and _has_float(v) for v in value)
    return False


def _parse_float(text: str) -> int | float:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"bad number {text!r}") from None
    # adjusted() bounds the magnitude first so "1e999999999" cannot make a giant int.
    if number.is_finite() and number.adjusted() < 20 and number == number.to_integral_value():
        return int(number)
    result = float(text)
    if not math.isfinite(result):
        raise ValueError(f"number {text!r} is out of range")
    return result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")
