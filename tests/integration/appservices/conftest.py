"""Fixtures of the application service tests: the bridge, and a server it is
registered with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.appservices.bridge import (
    Bridge,
    Client,
    registration,
    write_registration,
)


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    b = Bridge()
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", b.transaction)
    app.router.add_post("/_matrix/app/v1/ping", b.ping)
    app.router.add_get("/_matrix/app/v1/rooms/{alias}", b.room_query)
    app.router.add_get("/_matrix/app/v1/users/{user_id}", b.user_query)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b.url = f"http://127.0.0.1:{server.port}"
    yield b
    await server.close()


@pytest.fixture
async def server(homeserver_client: Callable[..., Any], bridge: Bridge, tmp_path: Path) -> Client:
    reg = write_registration(tmp_path / "bridge.yaml", registration(bridge.url))
    client: Client = await homeserver_client(
        open_registration=True,
        app_service_config_files=[reg],
        **{"rate_limits.enabled": False},
    )
    bridge.hs_url = str(client.make_url("")).rstrip("/")
    return client
