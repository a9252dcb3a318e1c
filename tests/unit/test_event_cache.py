"""The process cache of state-group entries: found, absent and evicted entries."""

from __future__ import annotations

from homeserver.services.rooms.event_cache import EventCache

HV = ("m.room.history_visibility", "")
ALICE = ("m.room.member", "@alice:example.org")
BOB = ("m.room.member", "@bob:example.org")


def test_unknown_entries_are_missing() -> None:
    cache = EventCache()
    assert cache.state_entries(7, [HV, ALICE]) == ({}, [HV, ALICE])


def test_found_and_absent_entries_are_both_remembered() -> None:
    cache = EventCache()
    cache.put_state_entries(7, [HV, ALICE], {HV: "$hv"})
    # Alice has no membership in group 7: that is an answer too, not a miss.
    assert cache.state_entries(7, [HV, ALICE]) == ({HV: "$hv"}, [])
    assert cache.state_entries(7, [HV, BOB]) == ({HV: "$hv"}, [BOB])
    # Another group shares nothing with group 7.
    assert cache.state_entries(8, [HV]) == ({}, [HV])


def test_the_least_recently_used_entries_go_first() -> None:
    cache = EventCache(entries=2)
    cache.put_state_entries(1, [HV], {HV: "$one"})
    cache.put_state_entries(2, [HV], {HV: "$two"})
    assert cache.state_entries(1, [HV]) == ({HV: "$one"}, [])  # group 1 is now the newest
    cache.put_state_entries(3, [HV], {HV: "$three"})
    assert cache.state_entries(2, [HV]) == ({}, [HV])
    assert cache.state_entries(1, [HV]) == ({HV: "$one"}, [])
    assert cache.state_entries(3, [HV]) == ({HV: "$three"}, [])
