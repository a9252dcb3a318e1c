"""Two matrix-nio clients chat while each runs `sync_forever`: every message, typing
notice and read receipt arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nio import (
    AsyncClient,
    JoinResponse,
    MatrixRoom,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    TypingNoticeEvent,
)

MESSAGES = 10


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_nio_clients_chat(running_homeserver: str) -> None:
    alice = AsyncClient(running_homeserver, "alice")
    bob = AsyncClient(running_homeserver, "bob")
    tasks: list[asyncio.Task[None]] = []
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            registered = await client.register(name, "correct horse", name.title())
            assert isinstance(registered, RegisterResponse), registered

        received: dict[str, list[str]] = {"alice": [], "bob": []}
        typing_seen: dict[str, set[str]] = {"alice": set(), "bob": set()}
        receipts_seen: dict[str, set[str]] = {"alice": set(), "bob": set()}

        def collect(name: str) -> None:
            client = alice if name == "alice" else bob

            async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
                received[name].append(event.body)

            async def on_typing(room: MatrixRoom, event: TypingNoticeEvent) -> None:
                typing_seen[name].update(event.users)

            async def on_receipt(room: MatrixRoom, event: ReceiptEvent) -> None:
                receipts_seen[name].update(r.event_id for r in event.receipts)

            client.add_event_callback(on_message, RoomMessageText)
            client.add_ephemeral_callback(on_typing, TypingNoticeEvent)
            client.add_ephemeral_callback(on_receipt, ReceiptEvent)

        collect("alice")
        collect("bob")
        created = await alice.room_create(name="Chat", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        tasks = [asyncio.create_task(client.sync_forever(timeout=30000)) for client in (alice, bob)]
        await eventually(lambda: room_id in alice.rooms and room_id in bob.rooms)

        sent: dict[str, list[str]] = {"alice": [], "bob": []}
        last_event = ""
        for i in range(MESSAGES):
            for client, name in ((alice, "alice"), (bob, "bob")):
                body = f"{name} says {i}"
                response = await client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                )
                assert isinstance(response, RoomSendResponse), response
                sent[name].append(body)
                last_event = response.event_id
        # Each sees both sides of the conversation, in order.
        expected = [f"{name} says {i}" for i in range(MESSAGES) for name in ("alice", "bob")]
        await eventually(lambda: received["alice"] == expected and received["bob"] == expected)

        await alice.room_typing(room_id, True, 10000)
        await eventually(lambda: alice.user_id in typing_seen["bob"])
        await bob.room_read_markers(room_id, last_event, last_event)
        await eventually(lambda: last_event in receipts_seen["alice"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await alice.close()
        await bob.close()
