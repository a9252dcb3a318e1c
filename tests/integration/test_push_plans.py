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


HISTORY_ROOMS = 10
ACTIONS = ("event_push_room_actions", "event_push_actions")


def _history(first: int, last: int) -> str:
    """Messages `first`..`last` of each history room, by @m1:x, room k's message n at
    stream position 100 + HISTORY_ROOMS*n + k: every tenth notifies the user through a
    highlighting row of their own, the others through the room row. The user's read
    receipt in each room moves to its third newest message."""
    rooms = HISTORY_ROOMS
    series = f"generate_series(1, {rooms}) k, generate_series({first}, {last}) n"
    so = f"100 + {rooms}*n + k"
    return f"""
    INSERT INTO events (event_id, room_id, type, sender, depth, origin_server_ts,
      stream_ordering, json)
      SELECT '$h'||({so}), '!h'||k||':x', 'm.room.message', '@m1:x', n, {so}, {so}, '{{}}'
      FROM {series};
    INSERT INTO event_push_room_actions (room_id, stream_ordering, thread_id, excluded)
      SELECT '!h'||k||':x', {so}, NULL, CASE WHEN n % 10 = 0 THEN ARRAY['@m1:x', '{USER}']
        ELSE ARRAY['@m1:x'] END FROM {series};
    INSERT INTO event_push_actions (user_id, stream_ordering, room_id, thread_id, actions,
      highlight)
      SELECT '{USER}', {so}, '!h'||k||':x', NULL, '["notify", {{"set_tweak": "highlight"}}]',
        TRUE FROM {series} WHERE n % 10 = 0;
    INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,
      event_stream_ordering, ts, stream_id)
      SELECT '!h'||k||':x', 'm.read', '{USER}', '', '$h'||({so}), {so}, 0, {so}
      FROM generate_series(1, {rooms}) k, (SELECT {last} - 3 AS n) r
      ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
        event_id = EXCLUDED.event_id, event_stream_ordering = EXCLUDED.event_stream_ordering;
    UPDATE stream_positions SET position = 100 + {rooms}*{last} + {rooms}
      WHERE stream = 'events';
    """


async def _grow(conninfo: str, first: int, last: int) -> None:
    """History up to message `last` in each room, folded into the user's summaries up
    to `last - 2` (their sync before the last two)."""
    rooms = [f"!h{k}:x" for k in range(1, HISTORY_ROOMS + 1)]
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(_history(first, last - 2).encode())
        await notifications.unread_counts(conn, USER, rooms)
        await conn.execute(_history(last - 1, last).encode())


async def _badge_and_pages(conninfo: str, last: int) -> list[int]:
    """The action rows read by the badge count and by two pages of /notifications,
    whose answers are checked against the fixture's: in every room the three newest
    messages after the receipt are unread, and the user's read up to the receipt."""

    async def read(conn: AsyncConnection) -> None:
        assert await notifications.total_unread(conn, USER) == 3 * HISTORY_ROOMS
        first = await notifications.notifications(conn, USER, None, 20, False)
        newest = 100 + HISTORY_ROOMS * (last + 1)
        assert [n.stream_ordering for n in first] == list(range(newest, newest - 20, -1))
        assert all(not n.read for n in first)
        second = await notifications.notifications(conn, USER, first[-1].stream_ordering, 20, False)
        assert [n.read for n in second] == [False] * 10 + [True] * 10
        highlights = await notifications.notifications(conn, USER, None, 5, True)
        # the own rows of the newest message of rooms 10 to 6
        expected = [100 + HISTORY_ROOMS * last + k for k in range(10, 5, -1)]
        assert [n.stream_ordering for n in highlights] == expected

    return await explained(conninfo, read, *ACTIONS)


async def test_badge_and_notifications_do_not_grow_with_history(
    database_factory: Callable[[], str],
) -> None:
    conninfo = database_factory()
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            f"""
            INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender,
              stream_ordering)
              SELECT '!h'||k||':x', u, 'join', '$j'||k||u, u, k
              FROM generate_series(1, {HISTORY_ROOMS}) k, unnest(ARRAY['{USER}', '@m1:x']) u;
            INSERT INTO push_member_spans (user_id, room_id, joined_at)
              SELECT user_id, room_id, stream_ordering FROM room_memberships;
            """.encode()
        )
    await _grow(conninfo, 1, 400)
    short = await _badge_and_pages(conninfo, 400)
    await _grow(conninfo, 401, 1600)
    long = await _badge_and_pages(conninfo, 1600)
    # The same rows read whatever the history behind them: what is new since the last
    # fold, and each room's page (before, all of it: 4,400 then 17,600 action rows for
    # the badge, as many for each page).
    assert long == short, (short, long)
