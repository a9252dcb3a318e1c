"""The membership lookups of hot paths (sync's room lists, device-list and presence
visibility, the user directory) keep their plans linear in a user's rooms on a
database never analyzed (this deployment's PostgreSQL runs without autovacuum): the
rows each executed plan read from room_memberships are counted, not timed, on tables
of real size (thousands of rooms and members)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection

from homeserver.storage.directory import users as directory
from homeserver.storage.e2ee import device_lists
from homeserver.storage.ephemeral import presence
from homeserver.storage.rooms import memberships
from homeserver.storage.sliding_sync import rooms as sliding_rooms
from homeserver.storage.sync import sync
from tests.integration.plans import explained, never_analyzed

ROOMS = 3000  # rooms of ten members each, two of them gone
USERS = 6000  # all in one big room too
VIEWER = "@v:x"  # in every fifth room: 600, a sixth of them left
VIEWER_JOINED = 500
OTHER = "@w:x"  # in every third room: 1000, and the big room
CHANGES = 40  # events, presence and device changes after the viewer's last sync

_FIXTURE = f"""
INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)
  SELECT '!r'||i||':x', '@u'||((i*7+k) % {USERS})||':x',
    CASE WHEN k % 5 = 4 THEN 'leave' ELSE 'join' END, '$m'||i||'_'||k, '@u0:x', 10*i+k
  FROM generate_series(1, {ROOMS}) i, generate_series(0, 9) k;
INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)
  SELECT '!big:x', '@u'||j||':x', 'join', '$b'||j, '@u0:x', 100000+j
  FROM generate_series(0, {USERS} - 1) j;
INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)
  SELECT '!r'||i||':x', '{VIEWER}', CASE WHEN i % 6 = 0 THEN 'leave' ELSE 'join' END,
    '$v'||i, '{VIEWER}', 10*i+9 FROM generate_series(1, {ROOMS}, 5) i;
INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)
  SELECT '!r'||i||':x', '{OTHER}', 'join', '$w'||i, '{OTHER}', 10*i+9
  FROM generate_series(1, {ROOMS}, 3) i
  UNION ALL SELECT '!big:x', '{OTHER}', 'join', '$wbig', '{OTHER}', 200000;
INSERT INTO events (event_id, room_id, type, sender, depth, origin_server_ts,
  stream_ordering, json)
  SELECT '$e'||n, '!r'||(1+5*n)||':x', 'm.room.message', '@u0:x', 1, 0, 300000+n, '{{}}'
  FROM generate_series(1, {CHANGES}) n;
INSERT INTO presence (user_id, state, last_active_ts, last_seen_ts, stream_id)
  SELECT '@u'||(3*n)||':x', 'online', 0, 0, n FROM generate_series(1, {CHANGES}) n
  UNION ALL SELECT '{OTHER}', 'online', 0, 0, 0;
INSERT INTO device_list_changes (position, user_id)
  SELECT n, '@u'||(3*n)||':x' FROM generate_series(1, {CHANGES}) n;
"""


async def _rows(conninfo: str, read: Callable[[AsyncConnection], Awaitable[Any]]) -> int:
    """The most room_memberships rows any one statement of `read` read."""
    read_per_statement = await explained(conninfo, read, "room_memberships")
    assert read_per_statement
    return max(read_per_statement)


async def test_membership_lookups_stay_linear_without_statistics(
    database_factory: Callable[[], str],
) -> None:
    conninfo = database_factory()
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(_FIXTURE.encode())
        assert await never_analyzed(conn, "room_memberships")  # the case under test

    async def is_joined(conn: AsyncConnection) -> None:
        assert await device_lists.is_joined(conn, "!r1:x", VIEWER)
        assert not await device_lists.is_joined(conn, "!r6:x", VIEWER)  # left

    async def room_lists(conn: AsyncConnection) -> None:
        joined = await memberships.rooms_of_user(conn, VIEWER)
        assert len(joined) == VIEWER_JOINED
        changed = await sync.changed_rooms(conn, VIEWER, 300000, 300000 + CHANGES)
        assert len(changed) == CHANGES
        assert len(await sliding_rooms.room_ids_of_user(conn, VIEWER)) == ROOMS // 5

    async def visibility(conn: AsyncConnection) -> None:
        seen = await presence.visible_changes(conn, VIEWER, 0, CHANGES, include_offline=False)
        assert 0 < len(seen) < CHANGES
        assert await presence.share_a_room(conn, VIEWER, OTHER)
        assert not await presence.share_a_room(conn, VIEWER, "@nobody:x")
        candidates = await device_lists.change_candidates(conn, VIEWER, 0, CHANGES)
        assert len(candidates) == CHANGES
        assert 0 < sum(c.sharing for c in candidates) < CHANGES

    async def directory_search(conn: AsyncConnection) -> None:
        found = await directory.search(conn, VIEWER, ["u1"], "u1%", 10, all_local_users=False)
        assert found

    # One lookup by key reads one row (the old tie read all the viewer's 500 rooms).
    assert await _rows(conninfo, is_joined) <= 1
    # Room lists read the viewer's rows once, and one row per changed room.
    assert await _rows(conninfo, room_lists) <= ROOMS // 5 + CHANGES
    # "Shares a joined room with the viewer" walks the viewer's joined rooms and looks
    # the other up in each by key, for each user it tests (a viewer's rooms times the
    # other's, 500 x 1000 = 500,000 per user, before).
    assert await _rows(conninfo, visibility) <= 2 * (CHANGES + 1) * VIEWER_JOINED
    # The directory reads the viewer's rooms and their members (10 each), no more.
    assert await _rows(conninfo, directory_search) <= 12 * VIEWER_JOINED
