"""The user directory finds people sharing a room with the searcher or in public rooms
(every local user when configured so), by user id or display name words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.e2ee_devices import Device


async def named(client: TestClient[Any, Any], localpart: str, name: str | None) -> Device:
    device = await Device.make(client, localpart)
    if name is not None:
        await device.ok("PUT", f"/profile/{device.user_id}/displayname", {"displayname": name})
    return device


async def search(device: Device, term: Any, limit: Any = None) -> dict[str, Any]:
    body = {"search_term": term} if limit is None else {"search_term": term, "limit": limit}
    result: dict[str, Any] = await device.ok("POST", "/user_directory/search", body)
    return result


def ids(result: dict[str, Any]) -> list[str]:
    return [r["user_id"] for r in result["results"]]


async def test_visibility_and_matching(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await named(client, "alice", "Alice Liddell")
    bob = await named(client, "bob", "Bob Builder")
    carol = await named(client, "carol", "Carol Public")
    dave = await named(client, "dave", None)
    eve = await named(client, "eve", "Eve Hidden")
    private = (await alice.ok("POST", "/createRoom", {"preset": "private_chat"}))["room_id"]
    await alice.ok("POST", f"/rooms/{private}/invite", {"user_id": bob.user_id})
    await bob.ok("POST", f"/rooms/{private}/join")
    await carol.ok("POST", "/createRoom", {"preset": "public_chat"})
    await eve.ok("POST", "/createRoom", {"preset": "private_chat"})

    # Display name words, any case; user ids; the result carries the profile.
    result = await search(bob, "LIDD")
    assert result == {
        "results": [{"user_id": alice.user_id, "display_name": "Alice Liddell"}],
        "limited": False,
    }
    assert ids(await search(bob, "ali")) == [alice.user_id]
    assert ids(await search(bob, "alice liddell")) == [alice.user_id]
    assert ids(await search(bob, "alice builder")) == []
    assert ids(await search(bob, "iddell")) == []  # not the start of a word
    assert ids(await search(bob, "@alice:test.local")) == [alice.user_id]

    # Carol is in a public room: everyone finds her. Eve shares nothing with Dave.
    assert ids(await search(dave, "carol")) == [carol.user_id]
    assert ids(await search(dave, "eve")) == []
    assert ids(await search(dave, "alice")) == []
    assert ids(await search(eve, "eve")) == [eve.user_id]

    # Odd input.
    assert await search(dave, "   ") == {"results": [], "limited": False}
    assert ids(await search(dave, "%")) == []
    assert ids(await search(dave, "(.*")) == []
    for bad in ({"search_term": 5}, {"search_term": "a", "limit": "x"}, {}):
        status, _ = await dave.call("POST", "/user_directory/search", bad)
        assert status == 400, bad


async def test_limit_and_search_all_users(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        **{"rate_limits.enabled": False, "user_directory.search_all_users": True}
    )
    searcher = await named(client, "searcher", None)
    people = [await named(client, f"person{i}", f"Person {i}") for i in range(5)]
    result = await search(searcher, "person", limit=3)
    assert result["limited"] is True
    assert len(result["results"]) == 3
    result = await search(searcher, "person")
    assert result["limited"] is False
    assert sorted(ids(result)) == sorted(p.user_id for p in people)
