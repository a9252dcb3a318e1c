"""End-to-end encryption with a real client: two matrix-nio clients (olm and megolm via
vodozemac) in an encrypted room read each other's messages, and a device that logs in
later receives the room key for new messages, all through our keys endpoints, /sync
device-list changes and to-device messages."""

from __future__ import annotations

from pathlib import Path

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

PASSWORD = "correct horse"
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


def encrypted_client(base_url: str, store: Path, user: str = "") -> AsyncClient:
    store.mkdir(parents=True)
    return AsyncClient(
        base_url,
        user,
        store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )


async def step(client: AsyncClient, timeout_ms: int = 0) -> SyncResponse:
    """One round of what nio's sync loop does: sync, then the key work it asks for."""
    response = await client.sync(timeout=timeout_ms)
    assert isinstance(response, SyncResponse), response
    await client.send_to_device_messages()
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    return response


async def read_text(client: AsyncClient, room_id: str, text: str) -> None:
    """Sync until `text` arrives decrypted; fail on an event that stays undecryptable."""
    undecrypted: list[MegolmEvent] = []
    for _ in range(20):
        response = await step(client, timeout_ms=500)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, RoomMessageText) and event.body == text:
                return
            if isinstance(event, MegolmEvent):
                undecrypted.append(event)
    raise AssertionError(f"{client.user_id}/{client.device_id} never read {text!r}: {undecrypted}")


async def send_text(client: AsyncClient, room_id: str, text: str) -> None:
    response = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": text},
        ignore_unverified_devices=True,
    )
    assert isinstance(response, RoomSendResponse), response


async def test_encrypted_conversation_and_a_new_device(
    running_homeserver: str, tmp_path: Path
) -> None:
    alice = encrypted_client(running_homeserver, tmp_path / "alice")
    bob = encrypted_client(running_homeserver, tmp_path / "bob")
    bob_laptop = encrypted_client(running_homeserver, tmp_path / "bob-laptop", "@bob:localhost")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            registered = await client.register(name, PASSWORD, f"{name}'s phone")
            assert isinstance(registered, RegisterResponse), registered
            await step(client)
            assert not client.should_upload_keys

        created = await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await step(bob)
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        for client in (alice, bob, alice, bob):
            await step(client)
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

        await send_text(alice, room_id, "hello bob")
        await read_text(bob, room_id, "hello bob")
        await send_text(bob, room_id, "hello alice")
        await read_text(alice, room_id, "hello alice")

        # Bob logs in on a laptop: Alice learns of the new device through /sync's
        # device_lists and shares her next room key with it too.
        logged_in = await bob_laptop.login(PASSWORD, device_name="bob's laptop")
        assert isinstance(logged_in, LoginResponse), logged_in
        await step(bob_laptop)
        assert not bob_laptop.should_upload_keys
        synced = await step(alice)
        assert bob.user_id in synced.device_list.changed
        assert bob_laptop.device_id in alice.device_store[bob.user_id]

        await send_text(alice, room_id, "for both of bob's devices")
        await read_text(bob_laptop, room_id, "for both of bob's devices")
        await read_text(bob, room_id, "for both of bob's devices")
        await send_text(bob_laptop, room_id, "from the laptop")
        await read_text(alice, room_id, "from the laptop")
    finally:
        for client in (alice, bob, bob_laptop):
            await client.close()
