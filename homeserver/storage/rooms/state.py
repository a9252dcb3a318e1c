"""State snapshots: state groups stored as bounded delta chains, and current state.

A state group is either a full snapshot (no prev_group) or a delta against its
prev_group. A chain is cut with a fresh snapshot once it is longer than
`max_hops(size)`: long enough that a snapshot's cost is spread over many changes
(a membership change in a large room costs one delta row, not a copy of the room),
short enough that reading any state walks a bounded chain in one query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from psycopg import AsyncConnection

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]


def max_hops(size: int) -> int:
    """A fresh snapshot (`size` rows) every `size` changes costs about one row per
    change; the cap bounds how far a read may walk in very large rooms."""
    return max(32, min(1024, size))


@dataclass(frozen=True, slots=True)
class StateGroupInfo:
    id: int
    hops: int
    size: int


async def get_group_info(conn: AsyncConnection, group: int) -> StateGroupInfo:
    cur = await conn.execute("SELECT id, hops, size FROM state_groups WHERE id = %s", (group,))
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no state group {group}")
    return StateGroupInfo(*row)


_CHAIN = """
    WITH RECURSIVE chain(id, prev_group, n) AS (
        SELECT id, prev_group, 0 FROM state_groups WHERE id = %(group)s
        UNION ALL
        SELECT g.id, g.prev_group, c.n + 1
        FROM state_groups g JOIN chain c ON g.id = c.prev_group
    )
"""


async def get_state(
    conn: AsyncConnection, group: int, keys: Iterable[StateKey] | None = None
) -> StateMap:
    """The full state of a group, or only the given (type, state_key) entries of it."""
    params: dict[str, object] = {"group": group}
    key_filter = ""
    if keys is not None:
        key_list = list(keys)
        if not key_list:
            return {}
        params["types"] = [k[0] for k in key_list]
        params["state_keys"] = [k[1] for k in key_list]
        key_filter = (
            " WHERE (e.type, e.state_key) IN"
            " (SELECT * FROM unnest(%(types)s::text[], %(state_keys)s::text[]))"
        )
    cur = await conn.execute(
        _CHAIN + "SELECT DISTINCT ON (e.type, e.state_key) e.type, e.state_key, e.event_id"
        " FROM chain c JOIN state_group_entries e ON e.state_group = c.id"
        + key_filter
        + " ORDER BY e.type, e.state_key, c.n",
        params,
    )
    return {(t, sk): eid for t, sk, eid in await cur.fetchall()}


async def get_state_for_groups(
    conn: AsyncConnection, groups: Iterable[int], keys: Iterable[StateKey]
) -> dict[int, StateMap]:
    """The given entries of many groups in one query: readers of a page of events
    (history visibility) need a few keys at each event, not whole states."""
    group_list = sorted(set(groups))
    key_list = list(keys)
    if not group_list or not key_list:
        return {}
    cur = await conn.execute(
        """
        WITH RECURSIVE chain(start, id, prev_group, n) AS (
            SELECT id, id, prev_group, 0 FROM state_groups WHERE id = ANY(%(groups)s)
            UNION ALL
            SELECT c.start, g.id, g.prev_group, c.n + 1
            FROM state_groups g JOIN chain c ON g.id = c.prev_group
        )
        SELECT DISTINCT ON (c.start, e.type, e.state_key) c.start, e.type, e.state_key,
            e.event_id
        FROM chain c JOIN state_group_entries e ON e.state_group = c.id
        WHERE (e.type, e.state_key) IN
            (SELECT * FROM unnest(%(types)s::text[], %(state_keys)s::text[]))
        ORDER BY c.start, e.type, e.state_key, c.n
        """,
        {
            "groups": group_list,
            "types": [k[0] for k in key_list],
            "state_keys": [k[1] for k in key_list],
        },
    )
    out: dict[int, StateMap] = {group: {} for group in group_list}
    for start, event_type, state_key, event_id in await cur.fetchall():
        out[int(start)][(event_type, state_key)] = event_id
    return out


async def get_state_of_type(conn: AsyncConnection, group: int, event_type: str) -> StateMap:
    cur = await conn.execute(
        _CHAIN + "SELECT DISTINCT ON (e.state_key) e.type, e.state_key, e.event_id"
        " FROM chain c JOIN state_group_entries e ON e.state_group = c.id"
        " WHERE e.type = %(type)s ORDER BY e.state_key, c.n",
        {"group": group, "type": event_type},
    )
    return {(t, sk): eid for t, sk, eid in await cur.fetchall()}


async def _insert_group(
    conn: AsyncConnection,
    room_id: str,
    prev_group: int | None,
    hops: int,
    size: int,
    entries: Mapping[StateKey, str],
) -> int:
    cur = await conn.execute(
        "INSERT INTO state_groups (room_id, prev_group, hops, size)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (room_id, prev_group, hops, size),
    )
    row = await cur.fetchone()
    assert row is not None
    group = int(row[0])
    if entries:
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
                " VALUES (%s, %s, %s, %s)",
                [(group, t, sk, eid) for (t, sk), eid in entries.items()],
            )
    return group


async def create_group(
    conn: AsyncConnection,
    room_id: str,
    prev_group: int | None,
    delta: Mapping[StateKey, str],
    new_keys: int,
) -> int:
    """A group whose state is prev_group's plus `delta`.

    `new_keys` is how many of the delta's keys were absent from prev_group (the caller
    knows this from current state), so the group's size is known without reading it.
    """
    if prev_group is None:
        return await _insert_group(conn, room_id, None, 0, len(delta), delta)
    prev = await get_group_info(conn, prev_group)
    size = prev.size + new_keys
    if prev.hops + 1 <= max_hops(size):
        return await _insert_group(conn, room_id, prev_group, prev.hops + 1, size, delta)
    full = await get_state(conn, prev_group)
    full.update(delta)
    return await _insert_group(conn, room_id, None, 0, len(full), full)


async def get_current_state(
    conn: AsyncConnection, room_id: str, keys: Iterable[StateKey] | None = None
) -> StateMap:
    if keys is None:
        cur = await conn.execute(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,)
        )
    else:
        key_list = list(keys)
        if not key_list:
            return {}
        cur = await conn.execute(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = %s"
            " AND (type, state_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            (room_id, [k[0] for k in key_list], [k[1] for k in key_list]),
        )
    return {(t, sk): eid for t, sk, eid in await cur.fetchall()}


async def get_current_state_of_type(
    conn: AsyncConnection, room_id: str, event_type: str
) -> StateMap:
    cur = await conn.execute(
        "SELECT type, state_key, event_id FROM current_state WHERE room_id = %s AND type = %s",
        (room_id, event_type),
    )
    return {(t, sk): eid for t, sk, eid in await cur.fetchall()}


async def set_current_state(
    conn: AsyncConnection, room_id: str, entries: Mapping[StateKey, str]
) -> None:
    if not entries:
        return
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO current_state (room_id, type, state_key, event_id)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (room_id, type, state_key)"
            " DO UPDATE SET event_id = EXCLUDED.event_id",
            [(room_id, t, sk, eid) for (t, sk), eid in entries.items()],
        )
