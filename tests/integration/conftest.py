"""A real homeserver application on a real port, over a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import build_app
from homeserver.config import Config, load_config
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.homeserver import Homeserver
from homeserver.storage.pool import Database


def make_config(data_dir: Path, **overrides: Any) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {"server_name": "test.local", **overrides}
    return load_config(data_dir, values, {}, {})


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
        hs = Homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_path)
        )
        client = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for db in dbs:
        await db.close()
