"""The windows of users' first answers kept for their next ones: per user one per set of
lists, a few at most, and a bound on them all."""

from __future__ import annotations

from homeserver.services.sliding_sync.lists import FirstWindows, FirstWindowsCache
from homeserver.storage.sliding_sync.rooms import Known


def windows(context: str, rooms: list[str] | None = None) -> FirstWindows:
    rooms = rooms if rooms is not None else ["!a:x", "!b:x"]
    return FirstWindows(context, "2.7", {"all": Known(rooms, 9, 40)}, frozenset(rooms[:1]))


def test_a_users_sets_of_lists_are_kept_apart_and_the_oldest_go() -> None:
    cache = FirstWindowsCache(size=100)
    for context in ("phone", "desktop"):
        cache.put("@u:x", windows(context))
    assert cache.get("@u:x", "phone") == windows("phone")
    assert cache.get("@u:x", "tablet") is None
    assert cache.get("@v:x", "phone") is None
    # A newer answer for the same lists replaces the older.
    cache.put("@u:x", windows("phone", ["!c:x"]))
    assert cache.get("@u:x", "phone") == windows("phone", ["!c:x"])
    # Past PER_USER sets, the least recently used goes ("desktop": "phone" was read).
    for i in range(FirstWindowsCache.PER_USER - 1):
        cache.put("@u:x", windows(f"other{i}"))
    assert cache.get("@u:x", "desktop") is None
    assert cache.get("@u:x", "phone") is not None


def test_past_the_bound_the_least_recently_served_users_go() -> None:
    cache = FirstWindowsCache(size=3)
    for user in ("@a:x", "@b:x", "@c:x"):
        cache.put(user, windows("all"))
    cache.get("@a:x", "all")
    cache.put("@d:x", windows("all"))
    assert cache.get("@b:x", "all") is None
    assert all(cache.get(u, "all") is not None for u in ("@a:x", "@c:x", "@d:x"))


def test_guesses_are_the_joined_rooms_read_from_the_start() -> None:
    kept = windows("all", ["!joined:x", "!invited:x"])
    assert kept.guesses("all", 77) == [("!joined:x", 0, 77)]
    assert kept.guesses("other", 77) == []
