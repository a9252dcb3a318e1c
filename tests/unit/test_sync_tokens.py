"""Sync tokens: exact text form, nothing else accepted."""

from __future__ import annotations

import pytest

from homeserver.services.sync.tokens import InvalidToken, SyncToken


def test_round_trip_and_order() -> None:
    token = SyncToken(1, 2, 3, 4, 5, 6, 7)
    assert str(token) == "s1_2_3_4_5_6_7"
    assert SyncToken.parse(str(token)) == token
    other = SyncToken(9, 0, 3, 0, 8, 0, 0)
    assert token.max(other) == SyncToken(9, 2, 3, 4, 8, 6, 7)
    assert other.ahead_of(token) == ["events", "to_device"]
    assert token.with_(typing=0).typing == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "s1_2_3_4_5_6",
        "s1_2_3_4_5_6_7_8",
        "s1_2_3_4_5_6_-7",
        "S1_2_3_4_5_6_7",
        "s1_2_3_4_5_6_7 ",
        "s1__3_4_5_6_7",
        "s1_2_3_4_5_6_1234567890123456789",
        "t1_2",
        "s１_2_3_4_5_6_7",
    ],
)
def test_garbage(text: str) -> None:
    with pytest.raises(InvalidToken):
        SyncToken.parse(text)
