"""Synapse and our servers on loopback, all federating over TLS with self-signed
certificates (verification off on every side), each named "localhost:PORT"."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from contrib.synapse_harness import SynapseInstance, ensure_synapse, make_self_signed_cert
from homeserver.app import build_app
from homeserver.config import load_config
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.homeserver import Homeserver
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from tests.integration.peers import free_port

OurServerFactory = Callable[..., Awaitable[Homeserver]]


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseInstance]:
    python = ensure_synapse()
    instance = SynapseInstance(tmp_path_factory.mktemp("synapse"), free_port(), free_port())
    instance.start(python)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
async def our_servers(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[OurServerFactory]:
    """Factory: `await our_servers(host="localhost", **config_overrides)` starts another
    of our homeservers, named "HOST:PORT", serving the client and federation APIs over TLS
    on a loopback port, with open registration and no rate limits."""
    running: list[tuple[Homeserver, TestServer, Database]] = []

    async def start(host: str = "localhost", **overrides: Any) -> Homeserver:
        port = free_port()
        data_dir = tmp_path / f"ours{len(running)}"
        data_dir.mkdir()
        cert, key = make_self_signed_cert(data_dir)
        config = load_config(
            data_dir,
            {
                "server_name": f"{host}:{port}",
                "federation.verify_tls": False,
                "federation.ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
                "open_registration": True,
                "rate_limits.enabled": False,
                **overrides,
            },
            {},
            {},
        )
        db = Database(database_factory(), size=4)
        await db.open()
        hs = build_homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_file)
        )
        await hs.start()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = TestServer(build_app(hs), host="127.0.0.1", port=port)
        # Synapse keeps its connections to us open: do not wait for it to hang up.
        await server.start_server(ssl=context, shutdown_timeout=1)
        running.append((hs, server, db))
        return hs

    yield start
    for hs, server, db in running:
        await hs.close()
        await server.close()
        await db.close()


@pytest.fixture
async def our_server(our_servers: OurServerFactory) -> Homeserver:
    """One of our homeservers (see `our_servers`)."""
    return await our_servers()
