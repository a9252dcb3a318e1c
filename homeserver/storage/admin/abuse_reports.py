"""Reports of events and users, as admins read and close them: with the reported
event's sender and the room's name and canonical alias beside each."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, sql

from homeserver.storage.admin.rooms import room_text


@dataclass(frozen=True, slots=True)
class EventReportRow:
    id: int
    received_ts: int
    room_id: str
    event_id: str
    user_id: str
    reason: str | None
    score: int | None
    sender: str | None
    name: str | None
    canonical_alias: str | None
    event_json: str | None


@dataclass(frozen=True, slots=True)
class UserReportRow:
    id: int
    received_ts: int
    target_user_id: str
    user_id: str
    reason: str


_EVENT_REPORTS = f"""
    SELECT er.id, er.received_ts, er.room_id, er.event_id, er.user_id, er.reason, er.score,
        e.sender, {room_text("m.room.name", "name")},
        {room_text("m.room.canonical_alias", "alias")}, e.json
    FROM event_reports er
    LEFT JOIN events e ON e.event_id = er.event_id
    LEFT JOIN rooms r ON r.room_id = er.room_id
"""

# Filters of the event report listing, by query parameter: the column each compares.
EVENT_FILTERS = {
    "user_id": "er.user_id",
    "room_id": "er.room_id",
    "event_sender_user_id": "e.sender",
}
USER_FILTERS = {"user_id": "user_id", "target_user_id": "target_user_id"}


def _where(filters: dict[str, str], columns: dict[str, str]) -> sql.Composable:
    clauses = [
        sql.SQL("{} = {}").format(sql.SQL(columns[key]), sql.Placeholder(key)) for key in filters
    ]
    return sql.SQL(" AND ").join([sql.SQL("TRUE"), *clauses])


async def list_event_reports(
    conn: AsyncConnection, filters: dict[str, str], *, ascending: bool, offset: int, limit: int
) -> tuple[list[EventReportRow], int]:
    where = _where(filters, EVENT_FILTERS)
    order = sql.SQL("ASC" if ascending else "DESC")
    cur = await conn.execute(
        sql.SQL(
            _EVENT_REPORTS + " WHERE {} ORDER BY er.received_ts {}, er.id {}"
            " LIMIT %(limit)s OFFSET %(offset)s"
        ).format(where, order, order),
        {**filters, "limit": limit, "offset": offset},
    )
    rows = [EventReportRow(*row) for row in await cur.fetchall()]
    cur = await conn.execute(
        sql.SQL(
            "SELECT count(*) FROM event_reports er LEFT JOIN events e ON e.event_id = er.event_id"
            " WHERE {}"
        ).format(where),
        filters,
    )
    total = await cur.fetchone()
    return rows, int(total[0]) if total else 0


async def get_event_report(conn: AsyncConnection, report_id: int) -> EventReportRow | None:
    cur = await conn.execute(_EVENT_REPORTS + " WHERE er.id = %s", (report_id,))
    row = await cur.fetchone()
    return EventReportRow(*row) if row else None


async def delete_event_report(conn: AsyncConnection, report_id: int) -> bool:
    cur = await conn.execute("DELETE FROM event_reports WHERE id = %s", (report_id,))
    return cur.rowcount == 1


async def list_user_reports(
    conn: AsyncConnection, filters: dict[str, str], *, ascending: bool, offset: int, limit: int
) -> tuple[list[UserReportRow], int]:
    where = _where(filters, USER_FILTERS)
    order = sql.SQL("ASC" if ascending else "DESC")
    cur = await conn.execute(
        sql.SQL(
            "SELECT id, received_ts, target_user_id, user_id, reason FROM user_reports WHERE {}"
            " ORDER BY received_ts {}, id {} LIMIT %(limit)s OFFSET %(offset)s"
        ).format(where, order, order),
        {**filters, "limit": limit, "offset": offset},
    )
    rows = [UserReportRow(*row) for row in await cur.fetchall()]
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM user_reports WHERE {}").format(where), filters
    )
    total = await cur.fetchone()
    return rows, int(total[0]) if total else 0


async def get_user_report(conn: AsyncConnection, report_id: int) -> UserReportRow | None:
    cur = await conn.execute(
        "SELECT id, received_ts, target_user_id, user_id, reason FROM user_reports WHERE id = %s",
        (report_id,),
    )
    row = await cur.fetchone()
    return UserReportRow(*row) if row else None


async def delete_user_report(conn: AsyncConnection, report_id: int) -> bool:
    cur = await conn.execute("DELETE FROM user_reports WHERE id = %s", (report_id,))
    return cur.rowcount == 1
