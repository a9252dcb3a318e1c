"""Push actions stored once per room: a message that notifies most members plainly is
one row for the room, and each member's counts, /notifications and deliveries are
derived from it (their spans of membership, their receipts, the members it leaves
out). Every count here is checked against what was sent, and the rows behind it
against the form they should take."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser
from tests.integration.test_notifications import counts, unread
from tests.integration.test_notifications_groups import crowd, notified_bodies, thread_reply
from tests.integration.test_push_gateway import (
    DAY_MS,
    LOOPBACK,
    QUIET_S,
    Gateway,
    gateway,  # noqa: F401 (the fixture)
    set_pusher,
)

THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def rows(user: RoomUser, room_id: str) -> tuple[list[tuple[str, int]], list[list[str]]]:
    """The room's per-member rows as (user, position) and its room rows' exclusions."""
    hs = user.client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, stream_ordering FROM event_push_actions WHERE room_id = %s"
            " ORDER BY stream_ordering, user_id",
            (room_id,),
        )
        own = [(u, int(s)) for u, s in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT excluded FROM event_push_room_actions WHERE room_id = %s"
            " ORDER BY stream_ordering",
            (room_id,),
        )
        shared = [sorted(x) for (x,) in await cur.fetchall()]
    return own, shared


def mention(text: str, *users: RoomUser) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": text,
        "m.mentions": {"user_ids": [u.user_id for u in users]},
    }


async def test_plain_messages_are_one_row_for_the_room(
    homeserver_client: Callable[..., Any],
) -> None:
    alice, members, room_id = await crowd(homeserver_client, 5)
    named = members[0]
    first = await alice.say(room_id, "one")
    await alice.send(room_id, mention("two, for member0", named))
    await alice.say(room_id, "three")
    own, shared = await rows(alice, room_id)
    # The mention is member0's own row (highlight); everything else is a room row.
    assert [u for u, _ in own] == [named.user_id]
    assert shared == [
        [alice.user_id],
        sorted([alice.user_id, named.user_id]),
        [alice.user_id],
    ]
    assert unread(await counts(named, room_id)) == (3, 1)
    for member in members[1:]:
        assert unread(await counts(member, room_id)) == (3, 0)
    assert unread(await counts(alice, room_id)) == (0, 0)
    # /notifications lists them per user, newest first, with their actions and reads.
    reader = members[1]
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}")
    status, page = await reader.get("/v3/notifications", limit="2")
    assert status == 200, page
    assert [(n["event"]["content"]["body"], n["read"]) for n in page["notifications"]] == [
        ("three", False),
        ("two, for member0", False),
    ]
    assert all(
        n["actions"] == ["notify"] and n["room_id"] == room_id for n in page["notifications"]
    )
    _, rest = await reader.get("/v3/notifications", **{"from": page["next_token"]})
    assert [(n["event"]["event_id"], n["read"]) for n in rest["notifications"]] == [(first, True)]
    _, high = await named.get("/v3/notifications", only="highlight")
    assert [n["event"]["content"]["body"] for n in high["notifications"]] == ["two, for member0"]
    _, none = await members[2].get("/v3/notifications", only="highlight")
    assert none["notifications"] == []
    _, own_list = await alice.get("/v3/notifications")
    assert own_list["notifications"] == []
    assert unread(await counts(reader, room_id)) == (2, 0)


async def test_membership_changes_between_room_rows(homeserver_client: Callable[..., Any]) -> None:
    alice, members, room_id = await crowd(homeserver_client, 4)
    late = await RoomUser.make(alice.client, "late")
    away = members[1]
    await alice.say(room_id, "a: before the join")
    await late.join(room_id)
    await alice.say(room_id, "b: after the join")
    await away.leave(room_id)
    await alice.say(room_id, "c: while away")
    await away.join(room_id)
    await alice.say(room_id, "d: after the return")
    _, shared = await rows(alice, room_id)
    assert len(shared) == 4  # every message one room row
    assert unread(await counts(late, room_id)) == (3, 0)
    assert unread(await counts(away, room_id)) == (1, 0)
    assert unread(await counts(members[0], room_id)) == (4, 0)
    # Notifications of the spans the member was in, and of none between them.
    assert await notified_bodies(away) == [
        "d: after the return",
        "b: after the join",
        "a: before the join",
    ]
    assert await notified_bodies(late) == [
        "d: after the return",
        "c: while away",
        "b: after the join",
    ]
    # One who left for good keeps the notifications of their time in the room.
    gone = members[2]
    await gone.leave(room_id)
    await alice.say(room_id, "e: after they left")
    assert "e: after they left" not in await notified_bodies(gone)
    assert len(await notified_bodies(gone)) == 4


async def test_receipts_moving_over_room_rows(homeserver_client: Callable[..., Any]) -> None:
    alice, members, room_id = await crowd(homeserver_client, 3)
    reader = members[0]
    ids = [await alice.say(room_id, f"m{i}") for i in range(6)]
    assert unread(await counts(reader, room_id)) == (6, 0)
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read/{ids[4]}")
    assert unread(await counts(reader, room_id)) == (1, 0)
    await alice.say(room_id, "m6")
    assert unread(await counts(reader, room_id)) == (2, 0)
    # An older private receipt: the later public one still covers more.
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read.private/{ids[1]}")
    assert unread(await counts(reader, room_id)) == (2, 0)
    # Another member's receipt moves only their counts.
    await members[1].ok("POST", f"/rooms/{room_id}/receipt/m.read/{ids[2]}")
    assert unread(await counts(members[1], room_id)) == (4, 0)
    assert unread(await counts(members[2], room_id)) == (7, 0)
    # The member's own message leaves their earlier counts as they were (Synapse
    # likewise: sending is not a read receipt) and does not count for them.
    await reader.say(room_id, "from the reader")
    assert unread(await counts(reader, room_id)) == (2, 0)
    assert unread(await counts(members[2], room_id)) == (8, 0)


async def test_members_with_own_rules_beside_room_rows(
    homeserver_client: Callable[..., Any],
) -> None:
    alice, members, room_id = await crowd(homeserver_client, 8)
    muted, loud, ignorer = members[0], members[1], members[2]
    await muted.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await loud.ok(
        "PUT",
        f"/pushrules/global/sender/{alice.user_id}",
        {"actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
    )
    await ignorer.ok(
        "PUT",
        f"/user/{ignorer.user_id}/account_data/m.ignored_user_list",
        {"ignored_users": {alice.user_id: {}}},
    )
    await alice.say(room_id, "hello")
    own, shared = await rows(alice, room_id)
    assert own == [(loud.user_id, own[0][1])]
    assert shared == [sorted([alice.user_id, muted.user_id, loud.user_id, ignorer.user_id])]
    assert unread(await counts(muted, room_id)) == (0, 0)
    assert unread(await counts(loud, room_id)) == (1, 0)
    assert unread(await counts(ignorer, room_id)) == (0, 0)
    for plain in members[3:]:
        assert unread(await counts(plain, room_id)) == (1, 0)
    _, page = await loud.get("/v3/notifications")
    assert page["notifications"][0]["actions"] == [
        "notify",
        {"set_tweak": "sound", "value": "default"},
    ]
    assert await notified_bodies(muted) == [] and await notified_bodies(ignorer) == []
    # Rules changed midway apply from then on.
    await muted.ok("DELETE", f"/pushrules/global/room/{room_id}")
    await members[3].ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await alice.say(room_id, "again")
    assert unread(await counts(muted, room_id)) == (1, 0)
    assert unread(await counts(members[3], room_id)) == (1, 0)
    assert unread(await counts(members[4], room_id)) == (2, 0)


async def test_most_members_muted_keeps_member_rows(homeserver_client: Callable[..., Any]) -> None:
    """When the members an event notifies plainly are fewer than the others, a row each
    is smaller than a room row listing the rest."""
    alice, members, room_id = await crowd(homeserver_client, 5)
    for member in members[:3]:
        await member.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await alice.say(room_id, "to the few")
    own, shared = await rows(alice, room_id)
    assert sorted(u for u, _ in own) == sorted(m.user_id for m in members[3:])
    assert shared == []
    assert [unread(await counts(m, room_id)) for m in members] == [(0, 0)] * 3 + [(1, 0)] * 2


async def test_thread_counts_from_room_rows(homeserver_client: Callable[..., Any]) -> None:
    alice, members, room_id = await crowd(homeserver_client, 4)
    root = await alice.say(room_id, "root")

    first = await thread_reply(alice, room_id, root, "one")
    await thread_reply(alice, room_id, root, "two")
    await alice.say(room_id, "main again")
    _, shared = await rows(alice, room_id)
    assert len(shared) == 4
    reader = members[0]
    room = await counts(reader, room_id, filter=THREADED)
    assert unread(room) == (2, 0)
    assert room["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read/{first}", {"thread_id": root})
    room = await counts(reader, room_id, filter=THREADED)
    assert unread(room) == (2, 0)
    assert room["unread_thread_notifications"] == {
        root: {"notification_count": 1, "highlight_count": 0}
    }
    await reader.ok("POST", f"/rooms/{room_id}/receipt/m.read/{root}", {"thread_id": "main"})
    room = await counts(reader, room_id, filter=THREADED)
    assert unread(room) == (1, 0)
    assert unread(await counts(reader, room_id)) == (2, 0)  # not by thread: all together
    assert unread(await counts(members[1], room_id)) == (4, 0)


async def test_room_rows_reach_push_gateways_and_age_out(
    homeserver_client: Callable[..., Any],
    gateway: Gateway,  # noqa: F811 (the fixture imported above)
) -> None:
    """A pusher of a member a room row notifies gets the message (with the unread count
    derived from the row); an excluded member's pusher gets nothing. Retention deletes
    room rows unread for too long, as it does members' own rows."""
    alice, members, room_id = await crowd(homeserver_client, 4, **LOOPBACK)
    plain, muted = members[0], members[1]
    await muted.ok("PUT", f"/pushrules/global/room/{room_id}", {"actions": ["dont_notify"]})
    await set_pusher(plain, gateway, "plain-key")
    await set_pusher(muted, gateway, "muted-key")
    hello = await alice.say(room_id, "hello crowd")
    _, shared = await rows(alice, room_id)
    assert shared == [sorted([alice.user_id, muted.user_id])]
    [note] = await gateway.wait_for(1)
    assert note["event_id"] == hello and note["devices"][0]["pushkey"] == "plain-key"
    assert note["counts"] == {"unread": 1}
    second = await alice.say(room_id, "again")
    assert (await gateway.wait_for(2))[1]["event_id"] == second
    await asyncio.sleep(QUIET_S)
    assert gateway.for_pushkey("muted-key") == []
    assert len(gateway.received) == 2
    hs = alice.client.server.app[HOMESERVER]
    now = int(time.time() * 1000)
    assert await hs.notifications.prune(now + 31 * DAY_MS) == 0  # nobody's read them
    assert len(await notified_bodies(plain)) == 2
    assert await hs.notifications.prune(now + 91 * DAY_MS) == 2
    assert await notified_bodies(plain) == []
    assert unread(await counts(plain, room_id)) == (0, 0)
