"""TURN credentials from `/voip/turnServer`, checked by a real coturn: a relay is
allocated with them, and refused once they have expired."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import auth_header, call, make_user
from tests.integration.peers import free_port

SECRET = "coturn shared secret"


def _ensure_coturn() -> None:
    """Debian's coturn, installed when missing (as on a clean CI machine)."""
    if shutil.which("turnserver") and shutil.which("turnutils_uclient"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "coturn"], check=True, env=env, timeout=600)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"coturn is not listening:\n{log.read_text()}")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """coturn on loopback with the shared-secret (REST API) scheme; its port."""
    _ensure_coturn()
    port = free_port()
    relay_base = random.randrange(50000, 64000, 100)
    log = tmp_path / "coturn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "turnserver",
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={port}",
                f"--min-port={relay_base}",
                f"--max-port={relay_base + 99}",
                "--use-auth-secret",
                f"--static-auth-secret={SECRET}",
                "--realm=test.local",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
                f"--pidfile={tmp_path / 'coturn.pid'}",
                f"--db={tmp_path / 'turndb'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process, log)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def _allocate(port: int, username: str, password: str) -> tuple[int, str]:
    """coturn's own client: allocate a relay and send a few packets through it."""
    process = await asyncio.create_subprocess_exec(
        "turnutils_uclient",
        "-y",
        "-n",
        "2",
        "-p",
        str(port),
        "-u",
        username,
        "-w",
        password,
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return await process.wait(), output.decode(errors="replace")


async def _credentials(client: Any) -> dict[str, Any]:
    _, token = await make_user(client, "caller")
    status, body = await call(client, "GET", "/v3/voip/turnServer", headers=auth_header(token))
    assert status == 200, body
    return dict(body)


async def test_coturn_relays_with_our_credentials(
    homeserver_client: Callable[..., Any], coturn: int
) -> None:
    uri = f"turn:127.0.0.1:{coturn}?transport=udp"
    client = await homeserver_client(
        turn_uris=[uri], turn_shared_secret=SECRET, turn_user_lifetime="1h"
    )
    creds = await _credentials(client)
    assert creds["uris"] == [uri]
    assert creds["ttl"] == 3600
    expiry, user_id = creds["username"].split(":", 1)
    assert user_id == "@caller:test.local"
    assert 3500 < int(expiry) - time.time() <= 3600
    code, output = await _allocate(coturn, creds["username"], creds["password"])
    assert code == 0, output
    assert "Total lost packets 0" in output, output


async def test_coturn_refuses_expired_credentials(
    homeserver_client: Callable[..., Any], coturn: int
) -> None:
    client = await homeserver_client(
        turn_uris=[f"turn:127.0.0.1:{coturn}"], turn_shared_secret=SECRET, turn_user_lifetime="1s"
    )
    creds = await _credentials(client)
    await asyncio.sleep(2.5)
    code, output = await _allocate(coturn, creds["username"], creds["password"])
    assert code != 0, output
    assert "Cannot complete Allocation" in output, output


async def test_static_credentials_and_no_turn(homeserver_client: Callable[..., Any]) -> None:
    static = await homeserver_client(
        turn_uris=["turns:turn.example.org:5349?transport=tcp"],
        turn_username="shared",
        turn_password="pass",
    )
    creds = await _credentials(static)
    assert (creds["username"], creds["password"]) == ("shared", "pass")
    assert creds["uris"] == ["turns:turn.example.org:5349?transport=tcp"]
    assert creds["ttl"] > 0
    assert await _credentials(await homeserver_client()) == {}
    status, body = await call(static, "GET", "/r0/voip/turnServer")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
