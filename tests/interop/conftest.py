"""Synapse and one of our servers on loopback, both federating over TLS with self-signed
certificates (verification off on both sides), each named "localhost:PORT"."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from contrib.synapse_harness import SynapseInstance, ensure_synapse, make_self_signed_cert
from homeserver.app import build_app
from homeserver.config import load_config
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.homeserver import Homeserver
from homeserver.storage.pool import Database
from tests.integration.peers import free_port


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
async def our_server(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Homeserver]:
    """Our homeserver serving federation over TLS on a loopback port."""
    port = free_port()
    cert, key = make_self_signed_cert(tmp_path)
    config = load_config(
        tmp_path,
        {"server_name": f"localhost:{port}", "federation.verify_tls": False},
        {},
        {},
    )
    db = Database(database_factory(), size=4)
    await db.open()
    hs = Homeserver(
        config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_path)
    )
    await hs.start()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = TestServer(build_app(hs), host="127.0.0.1", port=port)
    # Synapse keeps its connections to us open: do not wait for it to hang up.
    await server.start_server(ssl=context, shutdown_timeout=1)
    try:
        yield hs
    finally:
        await hs.close()
        await server.close()
        await db.close()
