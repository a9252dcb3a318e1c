"""What admins read of rooms and users' activity regardless of membership (Synapse's
admin messages, context, timestamp lookup, fetch_event, invite and join counts), and
redacting all of a user's messages, in the background with a status to poll (an admin
task: `services/admin/tasks.py`)."""

from __future__ import annotations

import logging
from typing import Any

from homeserver.services.accounts.filters import RoomEventFilter
from homeserver.services.admin.room_tools import acting_as
from homeserver.services.admin.tasks import AdminTasks
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.send import SendService
from homeserver.services.timeline.format import format_events
from homeserver.services.timeline.messages import context_state, keep_fields, parse_event_filter
from homeserver.services.timeline.visibility import event_of
from homeserver.storage.admin import room_history as store
from homeserver.storage.admin.tasks import TaskRow
from homeserver.storage.core.pool import Connection, Database

log = logging.getLogger(__name__)
MAX_LIMIT = 1000
# How a filtered context window reads past the events the filter hides.
FILTER_BATCH = 100
FILTER_ROUNDS = 10
REDACT_LIMIT = 10_000
# The scheduled-task action of redacting a user's events (Synapse's name).
REDACT_ALL_EVENTS = "redact_all_events"


def _int(raw: str | None, name: str, default: int | None = None) -> int:
    if raw is None:
        if default is None:
            raise ServiceError(400, "M_MISSING_PARAM", f"Missing {name}")
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise invalid_param(f"{name} must be a non-negative integer")
    return int(raw)


def _token(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.startswith("a") or not raw[1:].isdigit() or len(raw) > 20:
        raise invalid_param("Invalid pagination token")
    return int(raw[1:])


class AdminRoomHistory:
    def __init__(
        self,
        db: Database,
        cache: EventCache,
        membership: MembershipService,
        send: SendService,
        tasks: AdminTasks,
    ) -> None:
        self.db = db
        self.cache = cache
        self.membership = membership
        self.send = send
        self.tasks = tasks
        tasks.register(REDACT_ALL_EVENTS, self._redact)

    async def _format(self, event_ids: list[str]) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            return await format_events(conn, self.cache, event_ids)

    async def messages(
        self, room_id: str, *, start: str | None, direction: str, limit: str | None
    ) -> dict[str, Any]:
        if direction not in ("f", "b"):
            raise invalid_param("dir must be f or b")
        count = min(_int(limit, "limit", 10), MAX_LIMIT)
        async with self.db.pool.connection() as conn:
            found = await store.page(
                conn, room_id, _token(start), forward=direction == "f", limit=count
            )
        chunk = await self._format([eid for eid, _ in found])
        out: dict[str, Any] = {"chunk": chunk, "start": start or ("a0" if direction == "f" else "")}
        if found:
            out["end"] = f"a{found[-1][1]}"
        return out

    async def context(
        self, room_id: str, event_id: str, limit: str | None, filter_json: str | None
    ) -> dict[str, Any]:
        """The event, up to limit/2 events before it and the rest after it (those the
        filter lets through), and the state at the last of them, as a client's
        `/context` answers but whoever may see the room."""
        count = min(_int(limit, "limit", 10), MAX_LIMIT)
        event_filter = parse_event_filter(filter_json)
        async with self.db.pool.connection() as conn:
            position = await store.position_of(conn, room_id, event_id)
            if position is None:
                raise not_found("Event not found")
            before = await self._window(conn, room_id, position, False, count // 2, event_filter)
            after = await self._window(
                conn, room_id, position, True, count - count // 2, event_filter
            )
            ids = [event_id, *[e for e, _ in before], *[e for e, _ in after]]
            rows = await store.rows(conn, ids)
            senders = {event_of(self.cache, row).sender for row in rows.values()}
            last = rows[after[-1][0] if after else event_id]
            state_events = await context_state(
                conn, self.cache, last.state_group, event_filter, senders
            )
            formatted = keep_fields(
                await format_events(conn, self.cache, ids, rows=rows), event_filter
            )
        return {
            "event": formatted[0],
            "events_before": formatted[1 : 1 + len(before)],
            "events_after": formatted[1 + len(before) :],
            "state": keep_fields(state_events, event_filter),
            "start": f"a{before[-1][1] if before else position}",
            "end": f"a{after[-1][1] if after else position}",
        }

    async def _window(
        self,
        conn: Connection,
        room_id: str,
        position: int,
        forward: bool,
        limit: int,
        event_filter: RoomEventFilter | None,
    ) -> list[tuple[str, int]]:
        """Up to `limit` events on one side of `position` that the filter lets through,
        looking at most FILTER_ROUNDS batches past the ones it hides."""
        found: list[tuple[str, int]] = []
        cursor, rounds = position, 0
        while len(found) < limit and rounds < FILTER_ROUNDS:
            rounds += 1
            want = limit if event_filter is None else max(limit, FILTER_BATCH)
            batch = await store.page(conn, room_id, cursor, forward=forward, limit=want)
            kept = batch
            if event_filter is not None and batch:
                rows = await store.rows(conn, [e for e, _ in batch])
                kept = [
                    (e, p)
                    for e, p in batch
                    if e in rows and event_filter.matches(event_of(self.cache, rows[e]).pdu)
                ]
            found.extend(kept[: limit - len(found)])
            if len(batch) < want:
                break
            cursor = batch[-1][1]
        return found

    async def timestamp_to_event(
        self, room_id: str, ts: str | None, direction: str | None
    ) -> dict[str, Any]:
        if direction not in ("f", "b"):
            raise ServiceError(400, "M_MISSING_PARAM", "dir must be f or b")
        async with self.db.pool.connection() as conn:
            found = await store.nearest(conn, room_id, _int(ts, "ts"), forward=direction == "f")
        if found is None:
            raise not_found("No event found near that time")
        return {"event_id": found[0], "origin_server_ts": found[1]}

    async def fetch_event(self, event_id: str) -> dict[str, Any]:
        formatted = await self._format([event_id])
        if not formatted:
            raise not_found("Event not found")
        return {"event": formatted[0]}

    async def counts(self, user_id: str, from_ts: str | None, *, invites: bool) -> int:
        since = _int(from_ts, "from_ts")
        async with self.db.pool.connection() as conn:
            return await store.count_memberships(
                conn, user_id, "invite" if invites else "join", since, as_sender=invites
            )

    async def start_redaction(self, user_id: str, body: dict[str, Any]) -> str:
        """Redact the user's messages in these rooms (all the rooms they are in when the
        list is empty), as the user: anyone may redact their own events."""
        rooms = body.get("rooms", [])
        reason = body.get("reason")
        limit = body.get("limit", REDACT_LIMIT)
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise invalid_param("rooms must be a list of room ids")
        if reason is not None and not isinstance(reason, str):
            raise invalid_param("reason must be a string")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise invalid_param("limit must be a positive integer")
        rooms = rooms or await self.membership.joined_rooms(user_id)
        return await self.tasks.schedule(
            REDACT_ALL_EVENTS,
            user_id,
            {"rooms": rooms, "reason": reason, "limit": limit},
            f"Redact already in progress for user {user_id}",
        )

    async def _redact(self, task: TaskRow) -> dict[str, Any]:
        """Redact as the user, recording each failure as it happens; taken up again
        after its process died, it skips what is already redacted."""
        user = acting_as(task.resource_id)
        params = task.params
        result: dict[str, Any] = task.result or {"failed_redactions": {}}
        async with self.db.pool.connection() as conn:
            targets = await store.events_to_redact(
                conn, user.user_id, params["rooms"], params["limit"]
            )
        for room_id, event_id in targets:
            if event_id in result["failed_redactions"]:
                continue
            try:
                await self.send.redact(user, room_id, event_id, params["reason"], None)
            except ServiceError as exc:
                result["failed_redactions"][event_id] = exc.message
                await self.tasks.save_result(task.task_id, result)
        return result

    async def redaction_status(self, redact_id: str) -> dict[str, Any]:
        """In Synapse's shape: the failed redactions once complete, the error if failed."""
        found = await self.tasks.get(redact_id, REDACT_ALL_EVENTS)
        if found is None:
            raise not_found(f"redact id {redact_id!r} not found")
        if found.status == "complete":
            failed = (found.result or {}).get("failed_redactions") or {}
            return {"status": "complete", "failed_redactions": failed}
        if found.status == "failed":
            return {"status": "failed", "error": found.error or "Unknown error"}
        return {"status": found.status}
