"""Rooms shared with Synapse over TLS on loopback: our user joins a Synapse room, a
Synapse user joins ours, and messages flow both ways."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from homeserver.services.rooms.creation import parse_create_room

pytestmark = pytest.mark.interop


class SynapseUser:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str, user_id: str):
        self.session, self.base, self.user_id = session, base, user_id
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, synapse: SynapseInstance) -> Any:
        url = f"{synapse.client_url}/_matrix/client/v3/register"
        body: dict[str, Any] = {"username": f"s{uuid.uuid4().hex[:8]}", "password": "pw-pw"}
        async with session.post(url, json=body) as resp:
            flow = await resp.json()
        body["auth"] = {"type": "m.login.dummy", "session": flow["session"]}
        async with session.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            done = await resp.json()
        return cls(session, synapse.client_url, done["access_token"], done["user_id"])

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.base}/_matrix/client/v3{path}", json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.json()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def our_user(hs: Homeserver, localpart: str) -> str:
    return await hs.accounts.register_user(localpart, None)


async def our_timeline(hs: Homeserver, room_id: str) -> list[str]:
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT json::jsonb #>> '{content,body}' FROM events WHERE room_id = %s"
            " AND type = 'm.room.message' AND stream_ordering IS NOT NULL"
            " AND rejected_reason IS NULL AND NOT soft_failed",
            (room_id,),
        )
        return [row[0] for row in await cur.fetchall()]


async def synapse_sees(user: SynapseUser, room_id: str, text: str) -> bool:
    status, page = await user.call("GET", f"/rooms/{room_id}/messages?dir=b&limit=50")
    return status == 200 and any(e["content"].get("body") == text for e in page["chunk"])


async def test_we_join_a_synapse_room_and_chat(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with aiohttp.ClientSession() as session:
        sam = await SynapseUser.register(session, synapse)
        status, body = await sam.call("POST", "/createRoom", {"preset": "public_chat"})
        assert status == 200, body
        room_id = body["room_id"]
        alice = await our_user(our_server, "alice")
        await our_server.membership.join(room_id, alice, None, [synapse.server_name])
        await sam.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/1",
            {"msgtype": "m.text", "body": "from sam"},
        )
        await eventually(lambda: _contains(our_server, room_id, "from sam"))
        await say(our_server, room_id, alice, "from alice")
        await eventually(lambda: synapse_sees(sam, room_id, "from alice"))


async def say(hs: Homeserver, room_id: str, sender: str, text: str) -> None:
    async with hs.writer.writer(room_id) as writer:
        await writer.append("m.room.message", sender, {"msgtype": "m.text", "body": text})


async def _contains(hs: Homeserver, room_id: str, text: str) -> bool:
    return text in await our_timeline(hs, room_id)


async def test_synapse_user_joins_our_room_and_chats(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with aiohttp.ClientSession() as session:
        sam = await SynapseUser.register(session, synapse)
        alice = await our_user(our_server, "alice")
        request = parse_create_room({"preset": "public_chat"})
        room_id, _ = await our_server.creation.create(alice, request)
        status, body = await sam.call(
            "POST", f"/join/{room_id}?server_name={our_server.server_name}", {}
        )
        assert status == 200, body
        await say(our_server, room_id, alice, "welcome")
        await eventually(lambda: synapse_sees(sam, room_id, "welcome"))
        await sam.call(
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/1",
            {"msgtype": "m.text", "body": "thanks"},
        )
        await eventually(lambda: _contains(our_server, room_id, "thanks"))
