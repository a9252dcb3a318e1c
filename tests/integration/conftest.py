"""A real homeserver application on a real port, over a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.config import Config, load_config
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.accounts.auth import hash_token, new_token
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.wiring import build_homeserver
from homeserver.storage.accounts import devices, tokens
from homeserver.storage.core.pool import Database


def make_config(data_dir: Path, **overrides: Any) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {"server_name": "test.local", **overrides}
    return load_config(data_dir, values, {}, {})


async def start_process(data_dir: Path, conninfo: str) -> tuple[Homeserver, Database]:
    """One started process of the server whose data (and signing key) is in `data_dir`, on
    the database at `conninfo`, rate limits off: several of them on one `data_dir` are the
    processes of one server, as in a cluster."""
    config = make_config(data_dir, **{"rate_limits.enabled": False})
    db = Database(conninfo, size=4)
    await db.open()
    hs = build_homeserver(
        config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_file)
    )
    await hs.start()
    return hs, db


async def serve_process(hs: Homeserver) -> TestClient[Any, Any]:
    """A client of `hs` served on a real port."""
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def homeserver_client(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await homeserver_client(**config_overrides)` -> TestClient."""
    clients: list[TestClient[Any, Any]] = []
    dbs: list[Database] = []

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        config = make_config(tmp_path / f"hs{len(clients)}", **overrides)
        db = Database(database_factory(), size=4)
        await db.open()
        dbs.append(db)
        hs = build_homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_file)
        )
        await hs.start()
        # An explicit `port` override serves on it (federation tests put it in server_name).
        server = TestServer(build_app(hs), host="127.0.0.1", port=overrides.get("port"))
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
        await client.app[HOMESERVER].close()
    for db in dbs:
        await db.close()


CLIENT_V3 = "/_matrix/client/v3"


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def open_client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    """A server with open registration and no rate limits, for account tests."""
    client: TestClient[Any, Any] = await homeserver_client(
        open_registration=True, **{"rate_limits.enabled": False}
    )
    return client


async def register_user(
    client: TestClient[Any, Any], username: str, password: str = "secret pw", **fields: Any
) -> dict[str, Any]:
    """Register through the API (open registration, m.login.dummy); the response body
    with user_id, access_token and device_id."""
    body = {"username": username, "password": password, **fields}
    resp = await client.post(f"{CLIENT_V3}/register", json=body)
    assert resp.status == 401, await resp.text()
    session = (await resp.json())["session"]
    body["auth"] = {"type": "m.login.dummy", "session": session}
    resp = await client.post(f"{CLIENT_V3}/register", json=body)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def login_user(
    client: TestClient[Any, Any], user: str, password: str = "secret pw", **fields: Any
) -> dict[str, Any]:
    """Log in with a password; the response body."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **fields,
    }
    resp = await client.post(f"{CLIENT_V3}/login", json=body)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def make_user(
    client: TestClient[Any, Any], localpart: str, *, admin: bool = False
) -> tuple[str, str]:
    """Create an account and an access token straight through services and storage,
    skipping /register (and its password hashing); returns (user_id, access_token)."""
    hs = client.server.app[HOMESERVER]
    user_id = await hs.accounts.register_user(localpart, None, admin=admin)
    return user_id, await device_token(client, user_id, "TESTDEVICE")


async def device_token(client: TestClient[Any, Any], user_id: str, device_id: str) -> str:
    """A device of an existing account and an access token for it, straight through
    storage."""
    hs = client.server.app[HOMESERVER]
    token = new_token("syt")
    async with hs.db.pool.connection() as conn:
        await devices.upsert_device(conn, user_id, device_id, None, now_ms())
        await tokens.insert_access_token(
            conn, hash_token(token), user_id, device_id, now_ms=now_ms()
        )
    return token


class RoomUser:
    """A user driving rooms through the client API, for room and history tests."""

    def __init__(self, client: TestClient[Any, Any], user_id: str, token: str) -> None:
        self.client = client
        self.user_id = user_id
        self.headers = auth_header(token)
        self._txn = 0

    @classmethod
    async def make(cls, client: TestClient[Any, Any], localpart: str) -> RoomUser:
        user_id, token = await make_user(client, localpart)
        return cls(client, user_id, token)

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        """GET a client API path (version prefix included); (status, JSON body)."""
        resp = await self.client.get(f"/_matrix/client{path}", params=params, headers=self.headers)
        return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.client.request(
            method,
            f"{CLIENT_V3}{path}",
            json=body if body is not None else {},
            headers=self.headers,
        )
        assert resp.status == 200, f"{method} {path}: {resp.status} {await resp.text()}"
        return await resp.json()

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", body))["room_id"])

    async def send(
        self, room_id: str, content: dict[str, Any], type: str = "m.room.message"
    ) -> str:
        self._txn += 1
        result = await self.ok("PUT", f"/rooms/{room_id}/send/{type}/t{self._txn}", content)
        return str(result["event_id"])

    async def say(self, room_id: str, text: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": text})

    async def state(self, room_id: str, type: str, content: dict[str, Any], key: str = "") -> str:
        result = await self.ok("PUT", f"/rooms/{room_id}/state/{type}/{key}", content)
        return str(result["event_id"])

    async def redact(self, room_id: str, event_id: str) -> str:
        self._txn += 1
        result = await self.ok("PUT", f"/rooms/{room_id}/redact/{event_id}/r{self._txn}", {})
        return str(result["event_id"])

    async def join(self, room_id: str) -> None:
        await self.ok("POST", f"/rooms/{room_id}/join")

    async def leave(self, room_id: str) -> None:
        await self.ok("POST", f"/rooms/{room_id}/leave")

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": user_id})


async def call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One client API request (`path` after /_matrix/client, e.g. "/v3/search"): the
    status and JSON body. `data` sends raw bytes instead of `body` as JSON."""
    kwargs: dict[str, Any] = {"headers": headers or {}, "params": params or {}}
    if data is not None:
        kwargs["data"] = data
    elif body is not None:
        kwargs["json"] = body
    resp = await client.request(method, f"/_matrix/client{path}", **kwargs)
    return resp.status, await resp.json()


@pytest.fixture
async def servers(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Callable[[str], Any]]:
    """Starts servers on one database (two at once, or one after the other)."""
    conninfo = database_factory()
    running: dict[str, tuple[TestClient[Any, Any], Database]] = {}

    async def start(name: str) -> TestClient[Any, Any]:
        if name in running:
            old, old_db = running.pop(name)
            await old.close()
            await old.app[HOMESERVER].close()
            await old_db.close()
        hs, db = await start_process(tmp_path / "hs", conninfo)
        client = await serve_process(hs)
        running[name] = (client, db)
        return client

    yield start
    for client, db in running.values():
        await client.close()
        await client.app[HOMESERVER].close()
        await db.close()
