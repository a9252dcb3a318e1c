"""`m.ignored_user_list`: once a user ignores another, no read path hands them the
ignored user's events (sync initial and incremental, /messages, /context, /event,
search, notifications and unread counts), except state events, which still arrive so
that the room does not look different. Un-ignoring shows them again at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.storage.core.pool import Database
from tests.integration.conftest import RoomUser, serve_process, start_process

IGNORED = "m.ignored_user_list"


def timeline(sync: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = sync["rooms"]["join"][room_id]["timeline"]["events"]
    return events


def ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["event_id"] for e in events}


async def sync(user: RoomUser, **params: str) -> dict[str, Any]:
    status, body = await user.get("/v3/sync", timeout="0", **params)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def ignore(user: RoomUser, *others: RoomUser) -> None:
    content = {"ignored_users": {o.user_id: {} for o in others}}
    await user.ok("PUT", f"/user/{user.user_id}/account_data/{IGNORED}", content)


async def test_ignored_users_events_reach_no_read_path(
    open_client: TestClient[Any, Any],
) -> None:
    alice = await RoomUser.make(open_client, "alice")
    bob = await RoomUser.make(open_client, "bob")
    mallory = await RoomUser.make(open_client, "mallory")
    room_id = await alice.create_room(preset="public_chat")
    await bob.join(room_id)
    await mallory.join(room_id)
    await ignore(bob, mallory)
    since = (await sync(bob))["next_batch"]

    spam = await mallory.say(room_id, "spam findme")
    renamed = await mallory.state(
        room_id, "m.room.member", {"membership": "join", "displayname": "M"}, mallory.user_id
    )
    hello = await alice.say(room_id, "hello findme")

    incremental = timeline(await sync(bob, since=since), room_id)
    initial = timeline(await sync(bob), room_id)
    status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert status == 200
    for events in (incremental, initial, page["chunk"]):
        assert {hello, renamed} <= ids(events)
        assert spam not in ids(events)
    # Alice, who ignores nobody, sees it all.
    status, page = await alice.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert {spam, hello, renamed} <= ids(page["chunk"])

    status, context = await bob.get(f"/v3/rooms/{room_id}/context/{hello}", limit="10")
    assert status == 200
    around = context["events_before"] + context["events_after"]
    assert renamed in ids(around) and spam not in ids(around)
    assert (await bob.get(f"/v3/rooms/{room_id}/context/{spam}"))[0] == 404
    assert (await bob.get(f"/v3/rooms/{room_id}/event/{spam}"))[0] == 404
    assert (await bob.get(f"/v3/rooms/{room_id}/event/{renamed}"))[0] == 200

    found = await bob.ok("POST", "/search", _search("findme"))
    results = found["search_categories"]["room_events"]["results"]
    assert [r["result"]["event_id"] for r in results] == [hello]

    # No notification, and no unread count, for the ignored user's message.
    status, notifications = await bob.get("/v3/notifications")
    assert status == 200
    notified = [n["event"]["event_id"] for n in notifications["notifications"]]
    assert hello in notified and spam not in notified
    counts = (await sync(bob))["rooms"]["join"][room_id]["unread_notifications"]
    assert counts["notification_count"] == 1

    # Un-ignoring shows the messages again, at once.
    await ignore(bob)
    status, page = await bob.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert spam in ids(page["chunk"])
    assert (await bob.get(f"/v3/rooms/{room_id}/event/{spam}"))[0] == 200


def _search(term: str) -> dict[str, Any]:
    return {"search_categories": {"room_events": {"search_term": term}}}


async def test_an_ignore_set_on_another_process_stops_notifications_here(
    tmp_path: Path, database_factory: Callable[[], str]
) -> None:
    """Who ignores a sender is kept in memory by the process that evaluates push rules:
    a change of an ignore list made through another process (on the same database)
    reaches it, so the ignored sender's next message notifies nobody who ignores them."""
    conninfo = database_factory()
    clients: list[TestClient[Any, Any]] = []
    dbs: list[Database] = []
    try:
        for _ in range(2):
            hs, db = await start_process(tmp_path / "hs", conninfo)
            dbs.append(db)
            clients.append(await serve_process(hs))
        here, there = clients
        alice = await RoomUser.make(here, "alice")
        bob = await RoomUser.make(here, "bob")
        room_id = await alice.create_room(preset="public_chat")
        await bob.join(room_id)
        await alice.say(room_id, "before")  # `here` now knows nobody ignores alice
        assert (await sync(bob))["rooms"]["join"][room_id]["unread_notifications"][
            "notification_count"
        ] == 1

        bob_there = RoomUser(there, bob.user_id, bob.headers["Authorization"].split()[-1])
        await ignore(bob_there, alice)
        await asyncio.sleep(0.5)  # the broadcast crosses over
        await alice.say(room_id, "after")
        counts = (await sync(bob))["rooms"]["join"][room_id]["unread_notifications"]
        assert counts["notification_count"] == 1
        # And un-ignoring there counts alice's messages here again.
        await ignore(bob_there)
        await asyncio.sleep(0.5)
        await alice.say(room_id, "again")
        counts = (await sync(bob))["rooms"]["join"][room_id]["unread_notifications"]
        assert counts["notification_count"] == 2
    finally:
        for client in clients:
            await client.close()
            await client.app[HOMESERVER].close()
        for db in dbs:
            await db.close()
