"""The one stored form of an email address, and what is refused as one."""

from __future__ import annotations

import pytest

from homeserver.services.core.errors import ServiceError
from homeserver.services.threepids.addresses import canonical_email, client_secret


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("alice@example.org", "alice@example.org"),
        ("  Alice@Example.ORG ", "alice@example.org"),
        ("STRASSE@bücher.example", "strasse@xn--bcher-kva.example"),
        ("a.b+tag@sub.example.org", "a.b+tag@sub.example.org"),
    ],
)
def test_addresses_have_one_form(given: str, stored: str) -> None:
    assert canonical_email(given) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "alice",
        "@example.org",
        "alice@",
        "alice@localhost",
        "a@b@example.org",
        "alice @example.org",
        "alice@exa\x00mple.org",
        "Alice <alice@example.org>",
        "alice@" + "x" * 64 + ".org",
        "alice@" + "a" * 500 + ".org",
    ],
)
def test_non_addresses_are_invalid_params(bad: str) -> None:
    with pytest.raises(ServiceError) as caught:
        canonical_email(bad)
    assert (caught.value.status, caught.value.errcode) == (400, "M_INVALID_PARAM")


def test_client_secrets_follow_the_spec_grammar() -> None:
    assert client_secret("abc.DEF=_-123") == "abc.DEF=_-123"
    for bad in ("", "a b", "x" * 256, "é"):
        with pytest.raises(ServiceError):
            client_secret(bad)
    with pytest.raises(ServiceError) as caught:
        client_secret(None)
    assert caught.value.errcode == "M_MISSING_PARAM"
