"""End-to-end encryption across servers: a matrix-nio client on our server and one on
Synapse share an encrypted room and read each other's messages (device keys queried and
one-time keys claimed over federation, room keys sent as to-device EDUs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
)

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.e2e.test_e2ee_nio import ENCRYPTION, PASSWORD, read_text, send_text, step
from tests.interop.clients import client_url

pytestmark = pytest.mark.interop


def encrypted_client(base_url: str, store: Path) -> AsyncClient:
    store.mkdir(parents=True)
    return AsyncClient(
        base_url,
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        ssl=False,  # our server's self-signed certificate
    )


async def test_encrypted_messages_across_servers(
    synapse: SynapseInstance, our_server: Homeserver, tmp_path: Path
) -> None:
    alice = encrypted_client(client_url(our_server), tmp_path / "alice")
    sam = encrypted_client(client_url(synapse), tmp_path / "sam")
    try:
        for client, name in ((alice, "alice"), (sam, "sam")):
            registered = await client.register(name, PASSWORD, f"{name}'s phone")
            assert isinstance(registered, RegisterResponse), registered
            await step(client)

        created = await alice.room_create(initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        invited = await alice.room_invite(room_id, sam.user_id)
        assert isinstance(invited, RoomInviteResponse), invited
        for _ in range(20):
            await step(sam, timeout_ms=500)
            if room_id in sam.invited_rooms:
                break
        joined = await sam.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        for _ in range(20):
            for client in (alice, sam):
                await step(client, timeout_ms=200)
            if sam.user_id in alice.rooms[room_id].users and sam.rooms.get(room_id):
                break
        assert alice.rooms[room_id].encrypted and sam.rooms[room_id].encrypted

        await send_text(alice, room_id, "hello sam, privately")
        await read_text(sam, room_id, "hello sam, privately")
        await send_text(sam, room_id, "hello alice, privately")
        await read_text(alice, room_id, "hello alice, privately")
    finally:
        for client in (alice, sam):
            await client.close()
