"""Admins acting in rooms: joining a local user to a room, making a user a room admin
through the room's most powerful local member, trimming forward extremities, and
purging a room's history before a point (an admin task: `services/admin/tasks.py`)."""

from __future__ import annotations

import logging
import math
from typing import Any

from federation.events import Event
from federation.power_levels import user_level
from homeserver.services.accounts.auth import Requester
from homeserver.services.admin.tasks import AdminTasks
from homeserver.services.admin.users import local_user_id
from homeserver.services.core.errors import ServiceError, forbidden, invalid_param, not_found
from homeserver.services.rooms.event_cache import load_event
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.send import SendService
from homeserver.storage.admin import room_tools
from homeserver.storage.admin.tasks import TaskRow
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import events as event_store
from homeserver.storage.rooms import memberships, state

log = logging.getLogger(__name__)

# What a v12 creator (of infinite power) grants: the customary level of room admins.
CREATOR_GRANT = 100
# The scheduled-task action of a history purge (Synapse's name).
PURGE_HISTORY = "purge_history"


def acting_as(user_id: str) -> Requester:
    """A local member acting inside the server on an admin's behalf."""
    return Requester(user_id=user_id, device_id="", token_id=0, is_admin=False, is_guest=False)


class AdminRoomTools:
    def __init__(
        self,
        db: Database,
        server_name: str,
        membership: MembershipService,
        send: SendService,
        tasks: AdminTasks,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.membership = membership
        self.send = send
        self.tasks = tasks
        tasks.register(PURGE_HISTORY, self._purge)

    async def _state(self, room_id: str, *types: str) -> dict[str, Event]:
        """The room's current state events of these types (empty state keys), by type."""
        async with self.db.pool.connection() as conn:
            current = await state.get_current_state(conn, room_id, [(t, "") for t in types])
            rows = await event_store.get_events(conn, list(current.values()))
        return {row_type: load_event(rows[eid]) for (row_type, _), eid in current.items()}

    async def _state_content(self, room_id: str, event_type: str) -> dict[str, Any] | None:
        found = (await self._state(room_id, event_type)).get(event_type)
        return dict(found.content) if found is not None else None

    async def _local_members(self, room_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            rows = await memberships.members_of_room(conn, room_id)
        suffix = ":" + self.server_name
        return [row.user_id for row in rows if row.user_id.endswith(suffix)]

    async def join(self, requester: Requester, room: str, user_id: Any) -> str:
        """Join a local user to a room; a room they cannot join by themself (invite only)
        needs the admin in it, who invites them first (as Synapse does)."""
        if not isinstance(user_id, str):
            raise ServiceError(400, "M_MISSING_PARAM", "user_id must be a string")
        local_user_id(user_id, self.server_name)
        room_id = await self.membership.resolve_room(room)
        join_rules = await self._state_content(room_id, "m.room.join_rules") or {}
        if join_rules.get("join_rule") != "public":
            if await self.membership.current(room_id, requester.user_id) != "join":
                raise forbidden("The admin is not in the room, and the room is not public")
            if await self.membership.current(room_id, user_id) not in ("invite", "join"):
                await self.membership.invite(room_id, requester.user_id, user_id)
        await self.membership.join(room_id, user_id)
        return room_id

    async def make_room_admin(self, requester: Requester, room_id: str, user_id: Any) -> None:
        """Give `user_id` (the requester by default) the highest power level a local member
        has, through that member; joins them first if the room lets them."""
        target = requester.user_id if user_id is None else user_id
        if not isinstance(target, str):
            raise ServiceError(400, "M_INVALID_PARAM", "user_id must be a string")
        local_user_id(target, self.server_name)
        found = await self._state(room_id, "m.room.create", "m.room.power_levels")
        power_levels = found.get("m.room.power_levels")
        if power_levels is None:
            raise not_found("Room not found or has no power levels")
        create = found.get("m.room.create")
        local = await self._local_members(room_id)
        if not local:
            raise ServiceError(400, "M_UNKNOWN", "No local member of the room can grant power")
        acting = max(local, key=lambda member: user_level(member, create, power_levels))
        top = user_level(acting, create, power_levels)
        if math.isinf(top):
            # A room creator (v12) outranks any level: the highest level held, at least 100.
            users_levels = (power_levels.content.get("users") or {}).values()
            top = max([CREATOR_GRANT, *[v for v in users_levels if isinstance(v, int)]])
        levels = dict(power_levels.content)
        if await self.membership.current(room_id, target) != "join":
            if await self.membership.current(room_id, target) != "invite":
                await self.membership.invite(room_id, acting, target)
            await self.membership.join(room_id, target)
        users = dict(levels.get("users") or {})
        users[target] = int(top)
        await self.send.send(
            acting_as(acting),
            room_id,
            "m.room.power_levels",
            {**levels, "users": users},
            state_key="",
        )

    async def start_purge(self, room_id: str, event_id: str | None, body: dict[str, Any]) -> str:
        """Purge the room's history before a point, in the background; the purge id."""
        delete_local = body.get("delete_local_events", False)
        if not isinstance(delete_local, bool):
            raise invalid_param("delete_local_events must be a boolean")
        event_id = event_id or body.get("purge_up_to_event_id")
        ts = body.get("purge_up_to_ts")
        if event_id is None and ts is None:
            raise ServiceError(400, "M_MISSING_PARAM", "Missing purge_up_to_event_id or _ts")
        if event_id is not None and not isinstance(event_id, str):
            raise invalid_param("purge_up_to_event_id must be a string")
        if event_id is None and (not isinstance(ts, int) or isinstance(ts, bool)):
            raise invalid_param("purge_up_to_ts must be an integer")
        async with self.db.pool.connection() as conn:
            before = await room_tools.purge_point(conn, room_id, event_id, ts)
        if before is None or not await self._has_history_before(room_id, before):
            # As Synapse answers when nothing lies before the point.
            raise not_found("there is no event to be purged")
        return await self.tasks.schedule(
            PURGE_HISTORY, room_id, {"before": before, "delete_local_events": delete_local}
        )

    async def _has_history_before(self, room_id: str, before: int) -> bool:
        async with self.db.pool.connection() as conn:
            return await room_tools.has_events_before(conn, room_id, before)

    async def _purge(self, task: TaskRow) -> None:
        """Run a purge (again, if its process died: what is gone stays gone)."""
        before, delete_local = task.params["before"], task.params["delete_local_events"]
        local = None if delete_local else f":{self.server_name}"
        async with self.db.pool.connection() as conn, conn.transaction():
            await room_tools.lock_purges(conn, task.resource_id)
            count = await room_tools.purge_history(conn, task.resource_id, before, local)
        log.info("purged %d events of %s", count, task.resource_id)
        return None

    async def purge_status(self, purge_id: str) -> dict[str, Any]:
        """As Synapse answers: scheduled counts as active; a failure says why."""
        found = await self.tasks.get(purge_id, PURGE_HISTORY)
        if found is None:
            raise not_found(f"purge id {purge_id!r} not found")
        status = found.status if found.status in ("complete", "failed") else "active"
        out: dict[str, Any] = {"status": status}
        if found.error is not None:
            out["error"] = found.error
        return out

    async def forward_extremities(self, room_id: str) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            rows = await room_tools.forward_extremities(conn, room_id)
        results = [
            {"event_id": eid, "state_group": group, "depth": depth, "received_ts": ts}
            for eid, group, depth, ts in rows
        ]
        return {"count": len(results), "results": results}

    async def delete_forward_extremities(self, room_id: str) -> dict[str, Any]:
        """Keep only the latest extremity: the next event then has one parent."""
        async with self.db.pool.connection() as conn, conn.transaction():
            rows = await room_tools.forward_extremities(conn, room_id)
            if not rows:
                raise not_found("Room not found")
            deleted = await room_tools.delete_forward_extremities(conn, room_id, rows[0][0])
        return {"deleted": deleted}

    async def database_room_sizes(self) -> dict[str, Any]:
        async with self.db.pool.connection() as conn:
            rows = await room_tools.room_sizes(conn)
        return {"rooms": [{"room_id": room_id, "estimated_size": size} for room_id, size in rows]}
