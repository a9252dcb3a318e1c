"""The `rooms` of a sync response with their notification counts.

The counts are a few statements of their own (services/push/notifications.py) that
depend only on which rooms are in the `join` section: a large sync reads them on a
connection of its own while its rooms are built, rather than after.
"""

from __future__ import annotations

import asyncio

from federation.types import JsonDict
from homeserver.services.push.notifications import NotificationService
from homeserver.services.sync.rooms import ROOMS_PER_READ, RoomsBuilder
from homeserver.services.sync.state import RoomPlan
from homeserver.storage.core.pool import Connection, Pool


async def build_with_counts(
    conn: Connection,
    pool: Pool,
    notifications: NotificationService,
    builder: RoomsBuilder,
    plans: list[RoomPlan],
    extras: dict[str, JsonDict],
) -> JsonDict:
    """`builder.build(plans, extras)`, with each joined room's counts filled in."""
    by_thread = builder.filter.room.timeline.unread_thread_notifications
    # The rooms `build` puts in `join`: joined rooms, and rooms with only extras.
    placed = {p.room_id for p in plans if p.section in ("join", "leave")}
    join = [p.room_id for p in plans if p.section == "join"]
    join += [room_id for room_id in extras if room_id not in placed]

    async def apart() -> dict[str, JsonDict]:
        async with pool.connection() as lent:
            return await notifications.unread(lent, builder.user_id, join, by_thread)

    ahead: asyncio.Task[dict[str, JsonDict]] | None = None
    if len(join) > ROOMS_PER_READ and pool.can_lend():
        ahead = asyncio.create_task(apart())
    try:
        rooms = await builder.build(plans, extras)
    except BaseException:
        if ahead is not None:
            ahead.cancel()
        raise
    counts = await ahead if ahead is not None else {}
    joined: JsonDict = rooms["join"]
    covered = set(join) if ahead is not None else set()
    missing = [room_id for room_id in joined if room_id not in covered]
    if missing:
        counts |= await notifications.unread(conn, builder.user_id, missing, by_thread)
    for room_id, entry in joined.items():
        found = counts.get(room_id)
        if found is not None:
            entry.update(found)
        if by_thread:
            entry.setdefault("unread_thread_notifications", {})
    return rooms
