"""Server name and room version grammar, and finding the server in an id."""

from __future__ import annotations

import pytest

from federation.identifiers import is_valid_room_version_id, is_valid_server_name, server_name_of


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
