"""The per-sync push reads keep their plans linear in the user's rooms on a database
never analyzed (this deployment's PostgreSQL runs without autovacuum): the plans
PostgreSQL actually ran are taken from auto_explain and the rows their
room_memberships nodes read are counted, not timed."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import AsyncConnection

from homeserver.storage.push import notifications
from tests.integration.plans import explained, never_analyzed

ROOMS = 200
USER = "@u:x"
MEMBERS = [USER, "@m1:x", "@m2:x"]


def _fixture(rooms: int) -> str:
    """One user and two others in `rooms` rooms, each with a message by each of them
    (notifying the two others through a room row) and a read receipt by its sender."""
    members = "unnest(ARRAY['@u:x','@m1:x','@m2:x']) WITH ORDINALITY AS t(u, k)"
    series = f"generate_series(1, {rooms}) i"
    return f"""
    INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)
      SELECT '!r'||i||':x', u, 'join', '$j'||i||u, u, 10*i+k FROM {series}, {members};
    INSERT INTO push_member_spans (user_id, room_id, joined_at)
      SELECT user_id, room_id, stream_ordering FROM room_memberships;
    INSERT INTO events (event_id, room_id, type, sender, depth, origin_server_ts,
      stream_ordering, json)
      SELECT '$e'||(10*i+4+k), '!r'||i||':x', 'm.room.message', u, 5+k, 0, 10*i+4+k, '{{}}'
      FROM {series}, {members};
    INSERT INTO event_push_room_actions (room_id, stream_ordering, thread_id, excluded)
      SELECT '!r'||i||':x', 10*i+4+k, NULL, ARRAY[u] FROM {series}, {members};
    INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,
      event_stream_ordering, ts, stream_id)
      SELECT '!r'||i||':x', 'm.read', u, '', '$e'||(10*i+4+k), 10*i+4+k, 0, 10*i+4+k
      FROM {series}, {members};
    """


async def test_push_reads_stay_linear_without_statistics(
    database_factory: Callable[[], str],
) -> None:
    conninfo = database_factory()
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(_fixture(ROOMS).encode())
        assert await never_analyzed(conn, "room_memberships")  # the case under test
    rooms = [f"!r{i}:x" for i in range(1, ROOMS + 1)]
    safe = 10 * ROOMS + 100

    async def sync_reads(conn: AsyncConnection) -> None:
        # the first folds every room's actions into summaries; the second reads them
        for _ in range(2):
            counts = await notifications.unread_counts(conn, USER, rooms, safe)
            assert sum(c.notifications for c in counts.values()) == 2 * ROOMS
        assert await notifications.total_unread(conn, USER) == 2 * ROOMS
        listed = await notifications.notifications(conn, USER, None, 20, False)
        assert len(listed) == 20

    read = await explained(conninfo, sync_reads, "room_memberships")
    assert len(read) >= 5
    # A plan linear in the rooms reads a few membership rows per room; the bad one
    # read all the user's rooms per room (ROOMS² = 40,000 here).
    assert max(read) <= 4 * ROOMS, read
