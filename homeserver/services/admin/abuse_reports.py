"""Admins reading and closing the reports users sent about events and users, in
Synapse's shapes (what Ketesa's report pages read)."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.services.core.errors import invalid_param, not_found
from homeserver.storage.admin import abuse_reports as reports
from homeserver.storage.core.pool import Database

MAX_PAGE = 1000
# The query parameters each listing filters on.
EVENT_FILTERS = frozenset(reports.EVENT_FILTERS)
USER_FILTERS = frozenset(reports.USER_FILTERS)


def _event_report(row: reports.EventReportRow, *, with_event: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "received_ts": row.received_ts,
        "room_id": row.room_id,
        "name": row.name,
        "event_id": row.event_id,
        "user_id": row.user_id,
        "reason": row.reason,
        "score": row.score,
        "sender": row.sender,
        "canonical_alias": row.canonical_alias,
    }
    if with_event:
        out["event_json"] = orjson.loads(row.event_json) if row.event_json else None
    return out


def _user_report(row: reports.UserReportRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_ts": row.received_ts,
        "target_user_id": row.target_user_id,
        "user_id": row.user_id,
        "reason": row.reason,
    }


def report_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise invalid_param(
            "The report_id parameter must be a string representing a positive integer."
        )
    return int(raw)


class AdminReportService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_event_reports(
        self, filters: dict[str, str], *, ascending: bool, offset: int, limit: int
    ) -> dict[str, Any]:
        limit = min(limit, MAX_PAGE)
        async with self.db.pool.connection() as conn:
            rows, total = await reports.list_event_reports(
                conn, filters, ascending=ascending, offset=offset, limit=limit
            )
        out: dict[str, Any] = {
            "event_reports": [_event_report(row, with_event=False) for row in rows],
            "total": total,
        }
        if offset + limit < total:
            out["next_token"] = offset + len(rows)
        return out

    async def get_event_report(self, raw_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            row = await reports.get_event_report(conn, report_id(raw_id))
        if row is None:
            raise not_found("Event report not found")
        return _event_report(row, with_event=True)

    async def delete_event_report(self, raw_id: str) -> None:
        async with self.db.pool.connection() as conn:
            if not await reports.delete_event_report(conn, report_id(raw_id)):
                raise not_found("Event report not found")

    async def list_user_reports(
        self, filters: dict[str, str], *, ascending: bool, offset: int, limit: int
    ) -> dict[str, Any]:
        limit = min(limit, MAX_PAGE)
        async with self.db.pool.connection() as conn:
            rows, total = await reports.list_user_reports(
                conn, filters, ascending=ascending, offset=offset, limit=limit
            )
        out: dict[str, Any] = {"user_reports": [_user_report(row) for row in rows], "total": total}
        if offset + limit < total:
            out["next_token"] = offset + len(rows)
        return out

    async def get_user_report(self, raw_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            row = await reports.get_user_report(conn, report_id(raw_id))
        if row is None:
            raise not_found("User report not found")
        return _user_report(row)

    async def delete_user_report(self, raw_id: str) -> None:
        async with self.db.pool.connection() as conn:
            if not await reports.delete_user_report(conn, report_id(raw_id)):
                raise not_found("User report not found")
