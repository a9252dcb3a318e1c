"""Our servers as federation peers on loopback: each is named "127.0.0.1:PORT" (an explicit
port, so discovery needs no DNS or well-known) and speaks plain HTTP to the others."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.homeserver import Homeserver

PEER_CONFIG = {
    "federation.use_tls": False,
    "federation.verify_tls": False,
    "federation.ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_peer(homeserver_client: Callable[..., Any], **overrides: Any) -> Homeserver:
    """Start one of our servers as a peer; its Homeserver (the TestClient is closed by the
    fixture)."""
    port = free_port()
    client: TestClient[Any, Any] = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **overrides
    )
    return client.server.app[HOMESERVER]
