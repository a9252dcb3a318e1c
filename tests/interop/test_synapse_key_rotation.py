"""Our signing key rotated, with Synapse on the other side: Synapse meets our server only
after the rotation, and still verifies the events the retired key signed (through
`old_verify_keys`) as well as those the new key signs."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from contrib.synapse_harness import SynapseInstance, make_self_signed_cert
from homeserver.app import build_app
from homeserver.config import load_config
from homeserver.datadir import load_or_create_signing_key, rotate_signing_key
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from tests.integration.peers import free_port
from tests.interop.clients import PASSWORD, User, eventually, session

pytestmark = pytest.mark.interop


class OurRestartable:
    """One of our servers over TLS that can be stopped and started again on the same
    port, data directory and database."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.hs: Homeserver | None = None
        self.server: TestServer | None = None
        self.db: Database | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_self_signed_cert(data_dir)

    async def start(self) -> Homeserver:
        config = load_config(
            self.data_dir,
            {
                "server_name": f"localhost:{self.port}",
                "federation.verify_tls": False,
                "federation.ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
                "open_registration": True,
                "rate_limits.enabled": False,
            },
            {},
            {},
        )
        self.db = Database(self.database_url, size=4)
        await self.db.open()
        key = load_or_create_signing_key(config.signing_key_file)
        self.hs = build_homeserver(config=config, db=self.db, signing_key=key)
        await self.hs.start()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.server = TestServer(build_app(self.hs), host="127.0.0.1", port=self.port)
        await self.server.start_server(ssl=context, shutdown_timeout=1)
        return self.hs

    async def stop(self) -> None:
        if self.hs is not None:
            await self.hs.close()
            self.hs = None
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.db is not None:
            await self.db.close()
            self.db = None


async def login(user: User) -> None:
    """A new access token for the same user (after a restart the old one still works,
    but this keeps the user's client talking to the restarted server afresh)."""
    localpart = user.user_id.split(":")[0][1:]
    body: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": PASSWORD,
    }
    async with user.http.post(f"{user.base}/_matrix/client/v3/login", json=body) as resp:
        assert resp.status == 200, await resp.text()
        user.headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def test_synapse_verifies_old_and_new_events_after_rotation(
    synapse: SynapseInstance, tmp_path: Path, database_factory: Any
) -> None:
    ours = OurRestartable(tmp_path / "rotating", database_factory())
    try:
        hs = await ours.start()
        old_key_id = hs.signing_key.key_id
        async with session() as http:
            alice = await User.register(http, hs, "alice")
            room_id = await alice.create_room(preset="public_chat")
            await alice.say(room_id, "signed with the old key")

            await ours.stop()
            rotate_signing_key(ours.data_dir, ours.data_dir / "signing.key", now_ms())
            hs = await ours.start()
            assert hs.signing_key.key_id != old_key_id
            await login(alice)

            sam = await User.register(http, synapse, "sam")
            status, body = await sam.join(room_id, hs.server_name)
            assert status == 200, body
            await eventually(lambda: sam.sees(room_id, "signed with the old key"))
            await alice.say(room_id, "signed with the new key")
            await eventually(lambda: sam.sees(room_id, "signed with the new key"))
            await sam.say(room_id, "both arrived")
            await eventually(lambda: alice.sees(room_id, "both arrived"))
    finally:
        await ours.stop()
