"""Users reporting events and rooms to the server's admins.

An event can be reported only by a member of its room who may see it; anything
else is the same 404, so a report cannot reveal events a user could not read.
"""

from __future__ import annotations

from typing import Any

from federation.identifiers import domain_of, server_name_of
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import bad_json, invalid_param, not_found
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.timeline.visibility import filter_visible
from homeserver.storage.accounts import accounts
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, reports, rooms

MAX_REASON_CHARS = 10_000


def _reason(value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_json("reason must be a string")
    if len(value) > MAX_REASON_CHARS:
        raise invalid_param(f"reason must be at most {MAX_REASON_CHARS} characters")
    return value


def _score(value: Any) -> int | None:
    """The score of older clients (removed in v1.18): -100 (most offensive) to 0."""
    if value is None:
        return None
    if type(value) is not int or not -100 <= value <= 0:
        raise invalid_param("score must be an integer from -100 to 0")
    return value


class ReportService:
    def __init__(self, db: Database, event_cache: EventCache) -> None:
        self.db = db
        self.event_cache = event_cache

    async def report_event(
        self, requester: Requester, room_id: str, event_id: str, body: dict[str, Any]
    ) -> None:
        reason = _reason(body.get("reason"), required=False)
        score = _score(body.get("score"))
        unknown = not_found("Event not found, or you are not in its room")
        async with self.db.pool.connection() as conn:
            member = await memberships.get_membership(conn, room_id, requester.user_id)
            if member is None or member.membership != "join":
                raise unknown
            row = (await event_store.get_events(conn, [event_id])).get(event_id)
            if row is None or row.room_id != room_id:
                raise unknown
            visible = await filter_visible(
                conn, self.event_cache, requester.user_id, [row], hide_ignored=False
            )
            if not visible.rows:
                raise unknown
            await reports.insert_event_report(
                conn,
                room_id=room_id,
                event_id=event_id,
                user_id=requester.user_id,
                reason=reason,
                score=score,
                now_ms=now_ms(),
            )

    async def report_room(self, requester: Requester, room_id: str, body: dict[str, Any]) -> None:
        reason = _reason(body.get("reason"), required=True)
        assert reason is not None
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                raise not_found("Room not found")
            await reports.insert_room_report(
                conn,
                room_id=room_id,
                user_id=requester.user_id,
                reason=reason,
                now_ms=now_ms(),
            )

    async def report_user(self, requester: Requester, user_id: str, body: dict[str, Any]) -> None:
        """A report of a user; one of this server that does not exist is 404."""
        reason = _reason(body.get("reason"), required=True)
        assert reason is not None
        if server_name_of(user_id, "@") is None:
            raise invalid_param(f"{user_id!r} is not a user id")
        async with self.db.pool.connection() as conn:
            if domain_of(user_id) == domain_of(requester.user_id) and not (
                await accounts.user_exists(conn, user_id)
            ):
                raise not_found("User not found")
            await reports.insert_user_report(
                conn,
                target_user_id=user_id,
                user_id=requester.user_id,
                reason=reason,
                now_ms=now_ms(),
            )
