"""The servers we send to, with their retry state, as admins list and reset them."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, sql


@dataclass(frozen=True, slots=True)
class DestinationRow:
    destination: str
    failure_count: int
    retry_interval_ms: int
    retry_at_ts: int | None
    failure_ts: int | None
    last_error: str | None


_COLUMNS = "destination, failure_count, retry_interval_ms, retry_at_ts, failure_ts, last_error"
_RETRY_LAST = "CASE WHEN failure_count > 0 THEN retry_at_ts - retry_interval_ms ELSE 0 END"
# Synapse's order_by names, by the column (or expression) each sorts on.
ORDER_COLUMNS = {
    "destination": "destination",
    "retry_last_ts": _RETRY_LAST,
    "retry_interval": "retry_interval_ms",
    "failure_ts": "failure_ts",
    "last_successful_stream_ordering": "last_success_ts",
}


async def list_destinations(
    conn: AsyncConnection,
    name: str | None,
    *,
    order_by: str,
    ascending: bool,
    offset: int,
    limit: int,
) -> tuple[list[DestinationRow], int]:
    where = sql.SQL("destination ILIKE %(name)s" if name else "TRUE")
    params = {"name": f"%{name}%", "limit": limit, "offset": offset}
    direction = sql.SQL("ASC" if ascending else "DESC")
    cur = await conn.execute(
        sql.SQL(
            f"SELECT {_COLUMNS} FROM destinations WHERE {{}} ORDER BY {{}} {{}} NULLS LAST,"
            " destination LIMIT %(limit)s OFFSET %(offset)s"
        ).format(where, sql.SQL(ORDER_COLUMNS[order_by]), direction),
        params,
    )
    rows = [DestinationRow(*row) for row in await cur.fetchall()]
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM destinations WHERE {}").format(where), params
    )
    total = await cur.fetchone()
    return rows, int(total[0]) if total else 0


async def get_destination(conn: AsyncConnection, destination: str) -> DestinationRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM destinations WHERE destination = %s", (destination,)
    )
    row = await cur.fetchone()
    return DestinationRow(*row) if row else None


async def rooms_of_destination(
    conn: AsyncConnection, destination: str, *, ascending: bool, offset: int, limit: int
) -> tuple[list[tuple[str, int]], int]:
    """Rooms where the server has a joined member, with the room's latest stream position."""
    pattern = "%:" + destination.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    direction = "ASC" if ascending else "DESC"
    cur = await conn.execute(
        "SELECT m.room_id, COALESCE((SELECT max(e.stream_ordering) FROM events e"
        " WHERE e.room_id = m.room_id), 0), count(*) OVER ()"
        " FROM (SELECT DISTINCT room_id FROM room_memberships"
        " WHERE membership = 'join' AND user_id LIKE %s) m"
        f" ORDER BY m.room_id {direction} LIMIT %s OFFSET %s",
        (pattern, limit, offset),
    )
    rows = await cur.fetchall()
    total = int(rows[0][2]) if rows else 0
    return [(row[0], int(row[1])) for row in rows], total


async def reset(conn: AsyncConnection, destination: str) -> None:
    await conn.execute(
        "UPDATE destinations SET failure_count = 0, retry_interval_ms = 0, retry_at_ts = NULL,"
        " failure_ts = NULL WHERE destination = %s",
        (destination,),
    )
