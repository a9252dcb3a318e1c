"""Client-API users on either side of the federation (Synapse's or ours), driven over
HTTP as a client would, and small polling helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver

PASSWORD = "interop password"


def client_url(server: SynapseInstance | Homeserver) -> str:
    """Where a server's client API answers: Synapse over HTTP, ours over TLS."""
    if isinstance(server, SynapseInstance):
        return server.client_url
    return f"https://127.0.0.1:{server.server_name.rsplit(':', 1)[1]}"


def session() -> aiohttp.ClientSession:
    """A session that accepts our servers' self-signed certificates."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


class User:
    """A registered user of one server, talking to its client API."""

    def __init__(self, http: aiohttp.ClientSession, base: str, user_id: str, token: str) -> None:
        self.http, self.base, self.user_id = http, base, user_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.since: str | None = None
        self._txn = 0

    @classmethod
    async def register(
        cls, http: aiohttp.ClientSession, server: SynapseInstance | Homeserver, prefix: str
    ) -> User:
        base = client_url(server)
        body: dict[str, Any] = {"username": f"{prefix}{uuid.uuid4().hex[:8]}", "password": PASSWORD}
        async with http.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
            flow = await resp.json()
        body["auth"] = {"type": "m.login.dummy", "session": flow["session"]}
        async with http.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
            assert resp.status == 200, await resp.text()
            done = await resp.json()
        return cls(http, base, done["user_id"], done["access_token"])

    async def call(
        self, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, Any]:
        async with self.http.request(
            method,
            f"{self.base}/_matrix/client/v3{path}",
            json=body,
            params=params,
            headers=self.headers,
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, answer = await self.call(method, path, {} if body is None else body, **params)
        assert status == 200, f"{self.user_id}: {method} {path}: {status} {answer}"
        return answer

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", body))["room_id"])

    async def send(
        self, room_id: str, content: dict[str, Any], type: str = "m.room.message"
    ) -> str:
        self._txn += 1
        path = f"/rooms/{quote(room_id)}/send/{type}/t{self._txn}.{uuid.uuid4().hex[:6]}"
        return str((await self.ok("PUT", path, content))["event_id"])

    async def say(self, room_id: str, text: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": text})

    async def join(self, room: str, via: str | None = None) -> Any:
        params = {"server_name": via} if via else {}
        return await self.call("POST", f"/join/{quote(room)}", {}, **params)

    async def timeline(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's events, oldest first, through /messages."""
        status, page = await self.call(
            "GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=str(limit)
        )
        return list(reversed(page["chunk"])) if status == 200 else []

    async def bodies(self, room_id: str, limit: int = 100) -> list[str]:
        return [
            e["content"]["body"]
            for e in await self.timeline(room_id, limit)
            if e["type"] == "m.room.message" and "body" in e.get("content", {})
        ]

    async def sees(self, room_id: str, text: str) -> bool:
        return text in await self.bodies(room_id)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        status, body = await self.call(
            "GET", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
        )
        return body.get("membership") if status == 200 else None

    async def sync_until(
        self, found: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        """Incremental /syncs (from the last one) until `found` accepts a response."""
        deadline = time.monotonic() + within
        while True:
            params = {"timeout": "500"}
            if self.since is not None:
                params["since"] = self.since
            status, body = await self.call("GET", "/sync", **params)
            assert status == 200, body
            self.since = body["next_batch"]
            if found(body):
                return body
            assert time.monotonic() < deadline, f"{self.user_id}: sync never matched"


def ephemeral(body: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def invited_to(body: dict[str, Any], room_id: str) -> bool:
    return room_id in body.get("rooms", {}).get("invite", {})


def left(body: dict[str, Any], room_id: str) -> bool:
    """Whether a sync reports the user out of the room (left, kicked or banned)."""
    return room_id in body.get("rooms", {}).get("leave", {})
