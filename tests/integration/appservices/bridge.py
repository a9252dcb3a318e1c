"""A tiny application service on loopback, and the calls a bridge makes, for the
application service tests: registered with a YAML file as Synapse reads it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.conftest import CLIENT_V3, RoomUser, auth_header, register_user

Client = TestClient[Any, Any]
AS_TOKEN = "as_secret_token"
HS_TOKEN = "hs_secret_token"
SENDER = "@bridgebot:test.local"
QUIET_S = 1.5  # how long "nothing more arrives" is watched for


class Bridge:
    """An application service on loopback: records transactions and pings, answers
    transactions from a script (then 200), and creates aliases it is asked about."""

    def __init__(self) -> None:
        self.transactions: list[tuple[str, str | None, list[dict[str, Any]]]] = []
        self.bodies: list[dict[str, Any]] = []  # whole transaction bodies, as received
        self.user_queries: list[str] = []
        self.registered_with = "receive_ephemeral"  # the key that turned ephemeral data on
        self.answers: list[int] = []
        self.refused: set[int] = set()  # indexes of transactions answered with an error
        self.pings: list[tuple[str | None, dict[str, Any]]] = []
        self.alias_queries: list[str] = []
        self.hs_url = ""
        self.url = ""
        self._arrived = asyncio.Condition()

    async def transaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.answers.pop(0) if self.answers else 200
        async with self._arrived:
            self.bodies.append(body)
            self.transactions.append(
                (
                    request.match_info["txn_id"],
                    request.headers.get("Authorization"),
                    body["events"],
                )
            )
            if status != 200:
                self.refused.add(len(self.transactions) - 1)
            self._arrived.notify_all()
        return web.json_response({} if status == 200 else {"errcode": "M_UNKNOWN"}, status=status)

    async def ping(self, request: web.Request) -> web.Response:
        self.pings.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    async def room_query(self, request: web.Request) -> web.Response:
        """Create the room with the asked alias as the bridge bot, as bridges do."""
        alias = request.match_info["alias"]
        self.alias_queries.append(alias)
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        localpart = alias[1:].split(":", 1)[0]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.hs_url}{CLIENT_V3}/createRoom",
                json={"room_alias_name": localpart, "preset": "public_chat"},
                headers=auth_header(AS_TOKEN),
            ) as resp,
        ):
            if resp.status != 200:
                return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response({})

    async def user_query(self, request: web.Request) -> web.Response:
        """Register the asked user if it is one the other network has (not `*_nobody`)."""
        user_id = request.match_info["user_id"]
        self.user_queries.append(user_id)
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        localpart = user_id[1:].split(":", 1)[0]
        if localpart.endswith("_nobody"):
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.hs_url}{CLIENT_V3}/register",
                json={"type": "m.login.application_service", "username": localpart},
                headers=auth_header(AS_TOKEN),
            ) as resp,
        ):
            if resp.status != 200:
                return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response({})

    def ephemeral(self, key: str = "ephemeral") -> list[dict[str, Any]]:
        """The ephemeral data of the transactions the bridge took, each txnId once."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for i, ((txn_id, _, _), body) in enumerate(
            zip(self.transactions, self.bodies, strict=True)
        ):
            if i not in self.refused and txn_id not in seen:
                seen.add(txn_id)
                out.extend(body.get(key, []))
        return out

    async def wait_for_ephemeral(
        self, found: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: any(found(e) for e in self.ephemeral()))
        return next(e for e in self.ephemeral() if found(e))

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.transactions) >= count)

    def events(self) -> list[dict[str, Any]]:
        """The events of the transactions the bridge took, each txnId once (as the spec
        tells application services to drop a transaction they already processed)."""
        seen: dict[str, list[dict[str, Any]]] = {}
        out = []
        for i, (txn_id, _, events) in enumerate(self.transactions):
            if i in self.refused:
                continue
            if txn_id in seen:
                # A repeat (the answer was lost, e.g. to a restart) must be the same batch.
                assert [e["event_id"] for e in events] == [e["event_id"] for e in seen[txn_id]]
                continue
            seen[txn_id] = events
            out.extend(events)
        return out

    async def wait_for_event(self, event_id: str, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(
                lambda: any(e["event_id"] == event_id for e in self.events())
            )


def registration(url: str | None, **changes: Any) -> dict[str, Any]:
    """A registration file like the ones bridges generate."""
    data: dict[str, Any] = {
        "id": "testbridge",
        "url": url,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "bridgebot",
        "rate_limited": False,
        "namespaces": {
            "users": [{"regex": "@bridge_.*:test\\.local", "exclusive": True}],
            "aliases": [{"regex": "#bridge_.*:test\\.local", "exclusive": True}],
            "rooms": [],
        },
        "protocols": ["test"],
    }
    data.update(changes)
    return data


def write_registration(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


async def as_call(
    client: Client, method: str, path: str, body: Any = None, **params: str
) -> tuple[int, Any]:
    resp = await client.request(
        method,
        f"/_matrix/client{path}",
        json=body if body is not None else {},
        params=params,
        headers=auth_header(AS_TOKEN),
    )
    return resp.status, await resp.json()


async def register_bridged(client: Client, localpart: str) -> str:
    status, body = await as_call(
        client,
        "POST",
        "/v3/register",
        {"type": "m.login.application_service", "username": localpart, "inhibit_login": True},
    )
    assert status == 200, body
    assert "access_token" not in body  # inhibit_login
    return str(body["user_id"])


async def new_human(client: Client, localpart: str) -> tuple[str, str]:
    body = await register_user(client, localpart)
    return body["user_id"], body["access_token"]


async def room_with(client: Client, bridged: str) -> tuple[str, RoomUser]:
    """A room of a new human user that the bridged user joined."""
    human = RoomUser(client, *(await new_human(client, "h" + bridged[8:].split(":")[0])))
    room_id = await human.create_room()
    await human.invite(room_id, bridged)
    status, _ = await as_call(client, "POST", f"/v3/rooms/{room_id}/join", user_id=bridged)
    assert status == 200
    return room_id, human
