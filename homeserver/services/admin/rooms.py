"""Server admins managing rooms: listing and inspecting every room the server knows,
and deleting a room (shutting it down for local users, optionally blocking it and
purging it from the database).

A deletion runs in the background, as admin tools expect: the request answers with a
`delete_id` at once and the tool polls its status. Statuses are kept in the database
for a day, so a poll may reach any process. The deletion runs under an advisory lock
on a connection of the process that runs it (the delivery engine of
services/core/delivery.py): when that process dies, another one's sweep takes the
unfinished deletion up within seconds, and runs it again from the start (leaving the
room and purging it are safe to repeat).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from federation.identifiers import server_name_of
from homeserver.services.admin.tasks import AdminTasks
from homeserver.services.core.clock import now_ms
from homeserver.services.core.delivery import DeliveryWorkers
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.timeline.format import format_events
from homeserver.storage.admin import deletions
from homeserver.storage.admin import rooms as admin_rooms
from homeserver.storage.admin.rooms import AdminRoomRow
from homeserver.storage.core.pool import Database
from homeserver.storage.directory import aliases
from homeserver.storage.rooms import memberships, rooms, state

log = logging.getLogger(__name__)

ORDER_BY = admin_rooms.ORDER_COLUMNS
MAX_PAGE = 1000
STATUS_TTL_MS = 24 * 3600 * 1000
# How often each process looks for deletions whose process died.
SWEEP_INTERVAL_S = 5.0
RETRY_MS = 60_000


def check_room_id(room_id: str) -> str:
    """Room ids start with "!" (since room version 12 without a server name)."""
    if not room_id.startswith("!") or len(room_id) > 255 or "\x00" in room_id:
        raise invalid_param(f"{room_id!r} is not a room id")
    return room_id


def render_room(row: AdminRoomRow) -> dict[str, Any]:
    return asdict(row)


@dataclass(frozen=True, slots=True)
class RoomListing:
    search_term: str | None = None
    order_by: str = "name"
    ascending: bool = True
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    block: bool = False
    purge: bool = True
    force_purge: bool = False
    message: str | None = None


@dataclass(slots=True)
class Deletion:
    """Where one room deletion stands, in the shape admin tools poll for."""

    delete_id: str
    room_id: str
    status: str = "scheduled"  # then "active", "complete" or "failed"
    error: str | None = None
    kicked_users: list[str] = field(default_factory=list)
    failed_to_kick_users: list[str] = field(default_factory=list)
    local_aliases: list[str] = field(default_factory=list)
    timestamp_ms: int = field(default_factory=now_ms)  # of the last change of status

    @classmethod
    def of_row(cls, row: deletions.DeletionRow) -> Deletion:
        return cls(
            row.delete_id,
            row.room_id,
            row.status,
            row.error,
            row.kicked_users,
            row.failed_to_kick_users,
            row.local_aliases,
            row.timestamp_ms,
        )

    def render(self, *, with_id: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "shutdown_room": {
                "kicked_users": self.kicked_users,
                "failed_to_kick_users": self.failed_to_kick_users,
                "local_aliases": self.local_aliases,
                "new_room_id": None,
            },
        }
        if with_id:
            out = {"delete_id": self.delete_id, **out}
        if self.error is not None:
            out["error"] = self.error
        return out


class AdminRoomService:
    """Every room the server knows, as admins list, inspect, block and delete them;
    deletions run one at a time per room, and how they went is remembered."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        cache: EventCache,
        membership: MembershipService,
        tasks: AdminTasks,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.cache = cache
        self.membership = membership
        self.admin_tasks = tasks
        self._workers: DeliveryWorkers[str] = DeliveryWorkers(
            db,
            drain=self._drain,
            try_lock=deletions.try_lock,
            unlock=deletions.unlock,
            label=lambda delete_id: f"room deletion {delete_id}",
            failure_retry_ms=RETRY_MS,
            pending=self._unfinished,
            sweep_interval_s=SWEEP_INTERVAL_S,
            name="room deletions",
        )

    def start(self) -> None:
        """Look for deletions left unfinished by a process that died, now and then."""
        self._workers.start()

    async def list_rooms(self, listing: RoomListing) -> dict[str, Any]:
        """A page of rooms, with offsets of the pages around it."""
        if listing.order_by not in ORDER_BY:
            raise invalid_param(f"Cannot order rooms by {listing.order_by!r}")
        if listing.search_term is not None and not listing.search_term:
            raise invalid_param("search_term must not be empty")
        limit = min(listing.limit, MAX_PAGE)
        async with self.db.pool.connection() as conn:
            rows, total = await admin_rooms.list_rooms(
                conn,
                self.server_name,
                search_term=listing.search_term,
                order_by=listing.order_by,
                ascending=listing.ascending,
                offset=listing.offset,
                limit=limit,
            )
        out: dict[str, Any] = {
            "rooms": [render_room(row) for row in rows],
            "offset": listing.offset,
            "total_rooms": total,
        }
        if listing.offset + len(rows) < total:
            out["next_batch"] = listing.offset + len(rows)
        if listing.offset > 0:
            out["prev_batch"] = max(0, listing.offset - limit)
        return out

    async def _room(self, room_id: str) -> AdminRoomRow:
        async with self.db.pool.connection() as conn:
            row = await admin_rooms.get_room(conn, self.server_name, check_room_id(room_id))
        if row is None:
            raise not_found("Room not found")
        return row

    async def get_room(self, room_id: str) -> dict[str, Any]:
        """A room's page: the listing's facts, with its local devices and whether its
        local users all forgot it (Synapse's room details)."""
        row = await self._room(room_id)
        async with self.db.pool.connection() as conn:
            devices, forgotten = await admin_rooms.local_facts(conn, self.server_name, row.room_id)
        return {**render_room(row), "joined_local_devices": devices, "forgotten": forgotten}

    async def members(self, room_id: str) -> dict[str, Any]:
        """The joined members (as Synapse's admin API lists them)."""
        await self._room(room_id)
        async with self.db.pool.connection() as conn:
            rows = await memberships.members_of_room(conn, room_id)
        user_ids = sorted(row.user_id for row in rows)
        return {"members": user_ids, "total": len(user_ids)}

    async def room_state(self, room_id: str) -> dict[str, Any]:
        """Every current state event, whoever may see it (admins see all)."""
        await self._room(room_id)
        async with self.db.pool.connection() as conn:
            ids = await state.get_current_state(conn, room_id)
            events = await format_events(conn, self.cache, sorted(ids.values()))
        return {"state": events}

    async def block_status(self, room_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            user_id = await admin_rooms.blocked_by(conn, check_room_id(room_id))
        if user_id is None:
            return {"block": False}
        return {"block": True, "user_id": user_id}

    async def set_blocked(self, admin_id: str, room_id: str, block: bool) -> None:
        async with self.db.pool.connection() as conn:
            if block:
                await admin_rooms.block_room(conn, check_room_id(room_id), admin_id, now_ms())
            else:
                await admin_rooms.unblock_room(conn, check_room_id(room_id))

    async def schedule_deletion(self, admin_id: str, room_id: str, request: DeleteRequest) -> str:
        """Check the room and schedule its deletion; the delete_id to poll."""
        await self._check(room_id, request)
        delete_id = secrets.token_urlsafe(12)
        now = now_ms()
        async with self.db.pool.connection() as conn:
            await deletions.forget_finished(conn, now - STATUS_TTL_MS)
            if not await deletions.insert(conn, delete_id, room_id, admin_id, asdict(request), now):
                raise ServiceError(
                    400, "M_UNKNOWN", f"A deletion of {room_id} is already under way"
                )
        self._workers.wake(delete_id)
        return delete_id

    async def delete_now(self, admin_id: str, room_id: str, request: DeleteRequest) -> Deletion:
        """Delete the room before answering (the older, synchronous API)."""
        await self._check(room_id, request)
        deletion = Deletion(delete_id=secrets.token_urlsafe(12), room_id=room_id)
        await self._run(deletion, admin_id, request)
        if deletion.status == "failed":
            raise ServiceError(500, "M_UNKNOWN", deletion.error or "Room deletion failed")
        return deletion

    async def deletion_status(self, delete_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            row = await deletions.get(conn, delete_id)
        if row is None:
            raise not_found("delete id not found")
        return Deletion.of_row(row).render(with_id=False)

    async def tasks(
        self, wanted: dict[str, str], max_timestamp: int | None = None
    ) -> list[dict[str, Any]]:
        """The deletions and other admin tasks remembered, as Synapse's scheduled tasks,
        oldest change first; `wanted` filters on their fields, as Synapse filters."""
        found = [
            task
            for task in [*await self._deletion_tasks(), *await self.admin_tasks.listing()]
            if all(task[key] == value for key, value in wanted.items())
            and (max_timestamp is None or task["timestamp_ms"] <= max_timestamp)
        ]
        return sorted(found, key=lambda task: task["timestamp_ms"])

    async def _deletion_tasks(self) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            rows = await deletions.every(conn)
        found = [Deletion.of_row(row) for row in rows]
        return [
            {
                "id": d.delete_id,
                "action": "shutdown_and_purge_room",
                "status": d.status,
                "timestamp_ms": d.timestamp_ms,
                "resource_id": d.room_id,
                "result": d.render(with_id=False)["shutdown_room"],
                "error": d.error,
            }
            for d in found
        ]

    async def room_deletions(self, room_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            rows = await deletions.of_room(conn, room_id)
        if not rows:
            raise not_found("No deletion of this room is known")
        return {"results": [Deletion.of_row(row).render(with_id=True) for row in rows]}

    async def close(self) -> None:
        await self._workers.close()

    async def _unfinished(self) -> list[tuple[str, int | None]]:
        async with self.db.pool.connection() as conn:
            return [(delete_id, None) for delete_id in await deletions.unfinished(conn)]

    async def _drain(self, delete_id: str) -> int | None:
        """Run a scheduled deletion (or one whose process died), recording how it went."""
        async with self.db.pool.connection() as conn:
            row = await deletions.get(conn, delete_id)
            if row is None or row.status not in deletions.UNFINISHED:
                return None
            await deletions.update(conn, delete_id, "active", None, [], [], [], None)
        deletion = Deletion(delete_id, row.room_id)
        await self._run(deletion, row.admin_id, DeleteRequest(**row.request))
        async with self.db.pool.connection() as conn:
            await deletions.update(
                conn,
                delete_id,
                deletion.status,
                deletion.error,
                deletion.kicked_users,
                deletion.failed_to_kick_users,
                deletion.local_aliases,
                now_ms(),
            )
        return None

    async def _check(self, room_id: str, request: DeleteRequest) -> None:
        check_room_id(room_id)
        async with self.db.pool.connection() as conn:
            known = await rooms.get_room(conn, room_id) is not None
        # An unknown room may still be blocked, so nobody here can ever join it.
        if not known and not request.block:
            raise not_found("Room not found")

    async def _run(self, deletion: Deletion, admin_id: str, request: DeleteRequest) -> None:
        deletion.status = "active"
        try:
            await self._delete(deletion, admin_id, request)
        except Exception as exc:  # any failure is reported to the polling admin
            log.exception("deleting room %s failed", deletion.room_id)
            deletion.status = "failed"
            deletion.error = str(exc) or type(exc).__name__
        else:
            deletion.status = "complete"

    async def _delete(self, deletion: Deletion, admin_id: str, request: DeleteRequest) -> None:
        room_id = deletion.room_id
        if request.block:
            await self.set_blocked(admin_id, room_id, True)
        async with self.db.pool.connection() as conn:
            if await rooms.get_room(conn, room_id) is None:
                return
            joined = await memberships.members_of_room(conn, room_id)
            deletion.local_aliases = await aliases.aliases_of_room(conn, room_id)
            for alias in deletion.local_aliases:
                await aliases.delete_alias(conn, alias)
            await aliases.set_room_public(conn, room_id, False)
        local = [m.user_id for m in joined if server_name_of(m.user_id, "@") == self.server_name]
        for user_id in sorted(local):
            try:
                await self.membership.leave(room_id, user_id, request.message)
            except ServiceError as exc:
                log.warning("could not remove %s from %s: %s", user_id, room_id, exc.message)
                deletion.failed_to_kick_users.append(user_id)
            else:
                deletion.kicked_users.append(user_id)
        if request.purge:
            if deletion.failed_to_kick_users and not request.force_purge:
                raise RuntimeError("Some local users are still in the room; not purged")
            async with self.db.pool.connection() as conn, conn.transaction():
                await rooms.lock_room(conn, room_id)
                await admin_rooms.purge_room(conn, room_id)
