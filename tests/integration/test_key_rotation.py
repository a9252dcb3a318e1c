"""Rotating the signing key: `homeserver rotate-key` retires the key (published in
`old_verify_keys` with its `expired_ts`), the new one signs from the next start, peers
fetch the new key id they do not know, and what the old key signed still verifies,
also for a server that never saw it in use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from federation.keys import ServerKey, decode_verify_key
from federation.signing import verify_json
from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.config import ConfigError
from homeserver.datadir import load_or_create_signing_key, rotate_signing_key
from homeserver.services.core.clock import now_ms
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from tests.integration.conftest import RoomUser, make_config
from tests.integration.peers import PEER_CONFIG, free_port

Client = TestClient[Any, Any]


class Restartable:
    """One of our servers that can be stopped and started again on its port, data
    directory and database, as an operator does around `rotate-key`."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.client: Client | None = None
        self.db: Database | None = None

    async def start(self) -> Client:
        config = make_config(
            self.data_dir,
            server_name=self.server_name,
            **PEER_CONFIG,
            **{"rate_limits.enabled": False},
        )
        self.db = Database(self.database_url, size=4)
        await self.db.open()
        hs = build_homeserver(
            config=config,
            db=self.db,
            signing_key=load_or_create_signing_key(config.signing_key_file),
        )
        await hs.start()
        self.client = TestClient(TestServer(build_app(hs), host="127.0.0.1", port=self.port))
        await self.client.start_server()
        return self.client

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            await self.client.app[HOMESERVER].close()
            self.client = None
        if self.db is not None:
            await self.db.close()
            self.db = None


@pytest.fixture
async def restartable(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Restartable]:
    server = Restartable(tmp_path / "rotating", database_factory())
    yield server
    await server.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def sees(user: RoomUser, room_id: str, text: str) -> bool:
    status, page = await user.get(f"/v3/rooms/{room_id}/messages", dir="b", limit="50")
    return status == 200 and any(e["content"].get("body") == text for e in page["chunk"])


async def test_rotation_across_servers(
    restartable: Restartable, homeserver_client: Callable[..., Any]
) -> None:
    a = await restartable.start()
    port = free_port()
    b: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    alice = await RoomUser.make(a, "alice")
    bob = await RoomUser.make(b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}?server_name={restartable.server_name}")
    await alice.say(room_id, "before")
    await eventually(lambda: sees(bob, room_id, "before"))
    old_key = a.app[HOMESERVER].signing_key

    await restartable.stop()
    rotated_at = now_ms()
    old_id, new_id = rotate_signing_key(
        restartable.data_dir, restartable.data_dir / "signing.key", rotated_at
    )
    assert old_id == old_key.key_id and new_id != old_id
    a = await restartable.start()
    assert a.app[HOMESERVER].signing_key.key_id == new_id

    # The key response: the new key current, the old one expired, signed by the new.
    resp = await a.get("/_matrix/key/v2/server")
    keys = await resp.json()
    assert list(keys["verify_keys"]) == [new_id]
    assert keys["old_verify_keys"][old_id]["expired_ts"] == rotated_at
    assert decode_verify_key(keys["old_verify_keys"][old_id]["key"]) == old_key.verify_key
    assert list(keys["signatures"][restartable.server_name]) == [new_id]
    new_verify = ServerKey(decode_verify_key(keys["verify_keys"][new_id]["key"]), 2**53)
    verify_json(keys, restartable.server_name, lambda s, k: new_verify if k == new_id else None)

    # B knew only the old key: it fetches the new one for what A signs now.
    alice.client = a  # the same device, its transaction ids going on
    await alice.say(room_id, "after")
    await eventually(lambda: sees(bob, room_id, "after"))

    # A server that never saw the old key in use joins, and verifies the room's old
    # events (the create event, alice's join, "before") with the retired key.
    port = free_port()
    c: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG, **{"rate_limits.enabled": False}
    )
    carol = await RoomUser.make(c, "carol")
    await carol.ok("POST", f"/join/{room_id}?server_name={restartable.server_name}")
    await eventually(lambda: sees(carol, room_id, "before"))
    assert await sees(carol, room_id, "after")


def test_retired_keys_come_from_the_data_dir_and_config(tmp_path: Path) -> None:
    data_dir = tmp_path / "hs"
    data_dir.mkdir()
    first = load_or_create_signing_key(data_dir / "signing.key")
    old_id, _ = rotate_signing_key(data_dir, data_dir / "signing.key", 1234)
    old_id2, new_id = rotate_signing_key(data_dir, data_dir / "signing.key", 5678)
    assert old_id == first.key_id
    synapse_old = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"
    configured = {"ed25519:synapse_old": {"key": synapse_old, "expired_ts": 9}}
    config = make_config(data_dir, old_signing_keys=configured)
    assert config.old_signing_keys == {
        old_id: {"key": config.old_signing_keys[old_id]["key"], "expired_ts": 1234},
        old_id2: {"key": config.old_signing_keys[old_id2]["key"], "expired_ts": 5678},
        **configured,
    }
    assert new_id not in config.old_signing_keys
    for bad in (
        {"rsa:x": {"key": "AAAA", "expired_ts": 1}},
        {"ed25519:x": {"key": "not base64!", "expired_ts": 1}},
        {"ed25519:x": {"key": configured["ed25519:synapse_old"]["key"]}},
    ):
        with pytest.raises(ConfigError):
            make_config(tmp_path / "other", old_signing_keys=bad)


def test_rotate_key_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"
    before = load_or_create_signing_key(_ensure(data_dir) / "signing.key")
    done = subprocess.run(
        [sys.executable, "-m", "homeserver", "rotate-key", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    after = load_or_create_signing_key(data_dir / "signing.key")
    assert after.key_id != before.key_id and after.key_id in done.stdout
    retired = yaml.safe_load((data_dir / "old_signing_keys.yaml").read_text())
    assert set(retired) == {before.key_id}


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
