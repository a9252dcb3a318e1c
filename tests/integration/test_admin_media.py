"""Media moderation through the admin API: quarantined media is served to nobody (its
uploader and admins included) until released; protected media cannot be quarantined;
deleting media removes its row and, once nothing names it, its file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser, make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
V1 = "/_synapse/admin/v1"


async def upload(user: RoomUser, data: bytes) -> str:
    resp = await user.client.post(
        "/_matrix/media/v3/upload",
        data=data,
        headers={**user.headers, "Content-Type": "text/plain"},
    )
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["content_uri"]).rsplit("/", 1)[1]


async def download(user: RoomUser, media_id: str) -> int:
    resp = await user.client.get(
        f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=user.headers
    )
    return resp.status


async def test_quarantine_protect_list_and_delete(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    admin_id, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    bob = await RoomUser.make(client, "bob")
    first = await upload(alice, b"first file")
    second = await upload(alice, b"second file")
    third = await upload(alice, b"third file")

    status, listed = await admin_call(
        client, "GET", f"{V1}/users/{alice.user_id}/media", admin_token
    )
    assert status == 200 and listed["total"] == 3
    assert {m["media_id"] for m in listed["media"]} == {first, second, third}
    assert all(m["quarantined_by"] is None for m in listed["media"])

    # Quarantined: nobody gets it, the uploader included; released: served again.
    await admin_call(client, "POST", f"{V1}/media/quarantine/test.local/{first}", admin_token)
    assert await download(bob, first) == 404
    assert await download(alice, first) == 404
    status, info = await admin_call(client, "GET", f"{V1}/media/test.local/{first}", admin_token)
    assert info["media_info"]["quarantined_by"] == admin_id
    await admin_call(client, "POST", f"{V1}/media/unquarantine/test.local/{first}", admin_token)
    assert await download(bob, first) == 200

    # A protected file survives its uploader's quarantine.
    await admin_call(client, "POST", f"{V1}/media/protect/{second}", admin_token)
    status, body = await admin_call(
        client, "POST", f"{V1}/user/{alice.user_id}/media/quarantine", admin_token, {}
    )
    assert body == {"num_quarantined": 2}
    assert await download(bob, second) == 200
    assert await download(bob, third) == 404

    # Quarantine by room: the media its messages point at.
    room_id = await bob.create_room()
    own = await upload(bob, b"bob's picture")
    await bob.send(room_id, {"msgtype": "m.image", "body": "p", "url": f"mxc://test.local/{own}"})
    status, in_room = await admin_call(client, "GET", f"{V1}/room/{room_id}/media", admin_token)
    assert in_room == {"local": [f"mxc://test.local/{own}"], "remote": []}
    status, body = await admin_call(
        client, "POST", f"{V1}/room/{room_id}/media/quarantine", admin_token, {}
    )
    assert body == {"num_quarantined": 1}
    assert await download(bob, own) == 404

    status, stats = await admin_call(client, "GET", f"{V1}/statistics/users/media", admin_token)
    counts = {u["user_id"]: u["media_count"] for u in stats["users"]}
    assert counts == {alice.user_id: 3, bob.user_id: 1}

    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute("SELECT sha256 FROM media WHERE media_id = %s", (third,))
        row = await cur.fetchone()
        assert row is not None
    third_file = hs.media_files.path_of(row[0])
    assert third_file.is_file()
    status, body = await admin_call(client, "DELETE", f"{V1}/media/test.local/{third}", admin_token)
    assert body == {"deleted_media": [third], "total": 1}
    status, _ = await admin_call(client, "GET", f"{V1}/media/test.local/{third}", admin_token)
    assert status == 404
    assert not third_file.exists()
    # By date: everything before now, except the protected one.
    status, body = await admin_call(
        client, "POST", f"{V1}/media/delete", admin_token, {},
        params={"before_ts": str(2**41), "size_gt": "0"},
    )  # fmt: skip
    assert status == 400  # a time in the future
    status, body = await admin_call(
        client, "POST", f"{V1}/media/delete", admin_token, {},
        params={"before_ts": str(int(time.time() * 1000))},
    )  # fmt: skip
    assert status == 200 and set(body["deleted_media"]) == {first, own}
    status, listed = await admin_call(
        client, "GET", f"{V1}/users/{alice.user_id}/media", admin_token
    )
    assert [m["media_id"] for m in listed["media"]] == [second]
    assert await download(bob, first) == 404


async def test_delete_by_date_counts_the_last_access(
    homeserver_client: Callable[..., Any],
) -> None:
    """`before_ts` is the last use, as Synapse counts it: when the media was last served,
    or stored if it has not been since."""
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    _, admin_token = await make_user(client, "root", admin=True)
    alice = await RoomUser.make(client, "alice")
    served = await upload(alice, b"old but read")
    unread = await upload(alice, b"old and never read")
    await asyncio.sleep(0.02)
    cutoff = int(time.time() * 1000)
    await asyncio.sleep(0.02)
    assert await download(alice, served) == 200

    status, listed = await admin_call(
        client, "GET", f"{V1}/users/{alice.user_id}/media", admin_token,
        params={"order_by": "last_access_ts", "dir": "f"},
    )  # fmt: skip
    assert status == 200
    assert [m["media_id"] for m in listed["media"]] == [unread, served]
    by_id = {m["media_id"]: m for m in listed["media"]}
    assert by_id[unread]["last_access_ts"] == by_id[unread]["created_ts"] < cutoff
    assert by_id[served]["last_access_ts"] > cutoff > by_id[served]["created_ts"]

    status, body = await admin_call(
        client, "POST", f"{V1}/media/test.local/delete", admin_token, {},
        params={"before_ts": str(cutoff), "keep_profiles": "true"},
    )  # fmt: skip
    assert status == 200, body
    assert body == {"deleted_media": [unread], "total": 1}
    assert await download(alice, served) == 200
    assert await download(alice, unread) == 404
