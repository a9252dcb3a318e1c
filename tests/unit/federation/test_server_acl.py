"""Server ACL matching (`m.room.server_acl`), by the spec's rules and its example."""

from __future__ import annotations

import time
from typing import Any

import pytest

from federation.server_acl import glob_matches, host_of, is_ip_literal, parse_acl, server_allowed

# The spec's example content for m.room.server_acl.
SPEC_EXAMPLE = {"allow_ip_literals": False, "allow": ["*"], "deny": ["*.evil.com", "evil.com"]}


@pytest.mark.parametrize(
    ("server", "allowed"),
    [
        ("matrix.org", True),
        ("example.org:8448", True),
        ("evil.com", False),
        ("evil.com:8448", False),  # the port is not considered
        ("evil.com:1234", False),
        ("sub.evil.com", False),
        ("deep.sub.evil.com:443", False),
        ("notevil.com", True),  # `*.evil.com` needs the dot
        ("evil.com.example.org", True),
        ("1.2.3.4", False),  # allow_ip_literals false
        ("1.2.3.4:8448", False),
        ("[::1]", False),
        ("[2001:db8::1]:8448", False),
    ],
)
def test_spec_example(server: str, allowed: bool) -> None:
    assert server_allowed(SPEC_EXAMPLE, server) is allowed


def test_globs_are_case_insensitive() -> None:
    content = {"allow": ["*"], "deny": ["EVIL.com", "*.Bad.ORG"]}
    assert not server_allowed(content, "evil.COM")
    assert not server_allowed(content, "x.bad.org:80")
    assert server_allowed(content, "good.org")
    assert server_allowed({"allow": ["Good.Org"]}, "GOOD.org")


def test_question_mark_matches_exactly_one_character() -> None:
    content = {"allow": ["server?.example.org"]}
    assert server_allowed(content, "server1.example.org")
    assert server_allowed(content, "serverX.example.org:8448")
    assert not server_allowed(content, "server.example.org")
    assert not server_allowed(content, "server12.example.org")


def test_star_matches_zero_or_more_characters() -> None:
    content = {"allow": ["a*b"]}
    assert server_allowed(content, "ab")
    assert server_allowed(content, "a.x.y.b")
    assert not server_allowed(content, "a.x.y.bc")
    assert not server_allowed(content, "xab")


def test_other_characters_are_literal() -> None:
    # Regex syntax means nothing in a glob: `.` is a dot, `[`/`+` are themselves.
    assert not server_allowed({"allow": ["a.b"]}, "axb")
    assert server_allowed({"allow": ["[::1]"]}, "[::1]:8448")
    assert not server_allowed({"allow": ["a+"]}, "aa")


def test_deny_wins_over_allow() -> None:
    content = {"allow": ["evil.com", "*"], "deny": ["evil.com"]}
    assert not server_allowed(content, "evil.com")


def test_without_allow_every_server_is_denied() -> None:
    assert not server_allowed({}, "example.org")
    assert not server_allowed({"deny": []}, "example.org")
    assert not server_allowed({"allow": []}, "example.org")


def test_allow_ip_literals_defaults_to_true() -> None:
    content = {"allow": ["*"]}
    assert server_allowed(content, "1.2.3.4:8448")
    assert server_allowed(content, "[2001:db8::1]")
    # Allowed IP literals still go through deny and allow.
    assert not server_allowed({"allow": ["*"], "deny": ["1.2.3.*"]}, "1.2.3.4:80")
    assert not server_allowed({"allow": ["example.org"]}, "1.2.3.4")


def test_ip_literal_deny_precedes_allow() -> None:
    content = {"allow_ip_literals": False, "allow": ["1.2.3.4", "[::1]"]}
    assert not server_allowed(content, "1.2.3.4")
    assert not server_allowed(content, "[::1]:8448")


@pytest.mark.parametrize(
    "content",
    [
        {"allow": "*"},  # not a list: no allow rules at all
        {"allow": {"*": True}},
        {"allow": None},
        {"allow": [1, None, ["*"], {"x": "*"}]},  # no string entries
        "not an object",
        None,
    ],
)
def test_malformed_allow_denies(content: Any) -> None:
    assert not server_allowed(content, "example.org")


def test_invalid_entries_are_ignored_and_the_rest_kept() -> None:
    content = {"allow": [1, "good.org", None], "deny": [42, "bad.org", {"x": 1}]}
    assert server_allowed(content, "good.org")
    assert not server_allowed(content, "bad.org")
    assert not server_allowed(content, "other.org")


@pytest.mark.parametrize("value", ["false", 0, None, [], "no"])
def test_non_boolean_allow_ip_literals_means_true(value: Any) -> None:
    content = {"allow": ["*"], "allow_ip_literals": value}
    assert server_allowed(content, "1.2.3.4")
    assert server_allowed(content, "[::1]")


def test_non_list_deny_is_ignored() -> None:
    assert server_allowed({"allow": ["*"], "deny": "evil.com"}, "evil.com")


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("example.org", "example.org"),
        ("example.org:8448", "example.org"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]", "[::1]"),
        ("[2001:db8::1]:8448", "[2001:db8::1]"),
        ("", ""),
        ("[unterminated", "[unterminated"),
    ],
)
def test_host_of(name: str, host: str) -> None:
    assert host_of(name) == host


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("1.2.3.4", True),
        ("255.255.255.255", True),
        ("[::1]", True),
        ("[2001:db8::1]", True),
        ("127.000.0.1", True),  # dotted digits are never a DNS name
        ("1.2.3", True),
        ("example.org", False),
        ("1.2.3.4.example.org", False),
        ("localhost", False),
        ("1example.org", False),
    ],
)
def test_is_ip_literal(host: str, literal: bool) -> None:
    assert is_ip_literal(host) is literal


def test_parse_keeps_only_strings_lowercased() -> None:
    acl = parse_acl({"allow": ["A.org", 3, "a.org"], "deny": ["X**Y"], "allow_ip_literals": False})
    assert acl.allow == ("a.org",)
    assert acl.deny == ("x*y",)
    assert acl.allow_ip_literals is False


def test_pathological_globs_match_in_bounded_time() -> None:
    # A room admin anywhere can write these; a backtracking regex would take ages.
    glob = "*a" * 40 + "*b"
    text = "a" * 255
    started = time.perf_counter()
    assert not glob_matches(glob, text)
    assert not server_allowed({"allow": [glob] * 50}, text)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("glob", "text", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("*", "", True),
        ("?", "", False),
        ("*?", "a", True),
        ("?*?", "a", False),
        ("a*a*a", "aaa", True),
        ("a*a*a", "aa", False),
        ("*.example.org", ".example.org", True),
        ("*x*", "abc", False),
    ],
)
def test_glob_matches(glob: str, text: str, expected: bool) -> None:
    assert glob_matches(glob, text) is expected
