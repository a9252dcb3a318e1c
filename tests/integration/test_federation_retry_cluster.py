"""A server that retries a transaction may reach another of our processes behind the
load balancer: that process answers it as the first did, without handling it again."""

from __future__ import annotations

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import RoomUser
from tests.integration.test_push_gateway import Client, two_apps

__all__ = ["two_apps"]  # fixture

ORIGIN = "remote.example"


def _to_device(user_id: str, message_id: str) -> dict[str, object]:
    return {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": f"@bob:{ORIGIN}",
            "type": "m.test",
            "message_id": message_id,
            "messages": {user_id: {"*": {"n": message_id}}},
        },
    }


async def _inbox(client: Client, user_id: str) -> list[str]:
    hs = client.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT content FROM to_device_messages WHERE user_id = %s ORDER BY stream_id",
            (user_id,),
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_transaction_answered_by_one_process_is_not_handled_by_another(
    two_apps: tuple[Client, Client],
) -> None:
    first, second = two_apps
    alice = await RoomUser.make(first, "alice")
    answer = await first.app[HOMESERVER].inbound.on_transaction(ORIGIN, "t1", [], [])
    # The same transaction id again, at the other process: the first answer, and the
    # EDU (which a genuine retry would not carry differently) is not handled.
    again = await second.app[HOMESERVER].inbound.on_transaction(
        ORIGIN, "t1", [], [_to_device(alice.user_id, "m1")]
    )
    assert again == answer
    assert await _inbox(second, alice.user_id) == []
    # A new transaction is handled.
    await second.app[HOMESERVER].inbound.on_transaction(
        ORIGIN, "t2", [], [_to_device(alice.user_id, "m2")]
    )
    assert len(await _inbox(second, alice.user_id)) == 1
