"""Server name and room version grammar, and finding the server in an id."""

from __future__ import annotations

import pytest

from federation.identifiers import (
    create_event_id_for_room,
    domain_of,
    is_user_id,
    is_valid_room_version_id,
    is_valid_server_name,
    room_id_for_create_event,
    server_name_of,
)


@pytest.mark.parametrize(
    "name",
    ["", "a b", "example.org:", "example.org:123456", "[::1", "ex_ample.org", "a/b", "x" * 256, 5],
)
def test_invalid_server_names(name: object) -> None:
    assert not is_valid_server_name(name)


@pytest.mark.parametrize("identifier", ["", "1.2_beta", "V1", "x" * 33, None])
def test_invalid_room_version_ids(identifier: object) -> None:
    assert not is_valid_room_version_id(identifier)


@pytest.mark.parametrize(
    ("identifier", "sigil", "server"),
    [
        ("@alice:example.org", "@", "example.org"),
        ("@alice:example.org:8448", "@", "example.org:8448"),
        ("@alice:[::1]:8448", "@", "[::1]:8448"),
        ("$abc:example.org", "$", "example.org"),
        ("@alice", "@", None),
        ("alice:example.org", "@", None),
        ("@alice:bad server", "@", None),
        (None, "@", None),
    ],
)
def test_server_name_of(identifier: object, sigil: str, server: str | None) -> None:
    assert server_name_of(identifier, sigil) == server


def test_domain_of_is_lenient() -> None:
    """The auth rules compare domains without validating them, as other servers do."""
    assert domain_of("@alice:example.org:8448") == "example.org:8448"
    assert domain_of("@alice:bad server") == "bad server"
    assert domain_of("@alice") == ""


@pytest.mark.parametrize(
    ("value", "ok"),
    [("@a:b", True), ("@a:bad server", True), ("@a", False), ("a:b", False), (5, False)],
)
def test_is_user_id(value: object, ok: bool) -> None:
    assert is_user_id(value) is ok
    assert not is_user_id("@a:" + "b" * 253)


def test_v12_room_ids_and_create_event_ids() -> None:
    assert room_id_for_create_event("$abc") == "!abc"
    assert create_event_id_for_room("!abc") == "$abc"
    assert create_event_id_for_room("!") is None
    assert create_event_id_for_room("#alias:x") is None
