"""Sending our new events to the other servers in their room: every server with a
joined member, plus the server of a remote user we invite, kick or ban. The servers of
a room are cached and forgotten when a member event is written to it."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from federation.events import MEMBER
from federation.identifiers import domain_of
from homeserver.services.rooms.writer import RoomWriter
from homeserver.storage.remote import room_servers

if TYPE_CHECKING:
    from homeserver.services.homeserver import Homeserver

CACHED_ROOMS = 10_000


class RoomServers:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._servers: OrderedDict[str, frozenset[str]] = OrderedDict()

    async def servers(self, room_id: str) -> frozenset[str]:
        cached = self._servers.get(room_id)
        if cached is not None:
            self._servers.move_to_end(room_id)
            return cached
        async with self.hs.db.pool.connection() as conn:
            found = frozenset(await room_servers.servers_in_room(conn, room_id))
        self._servers[room_id] = found
        if len(self._servers) > CACHED_ROOMS:
            self._servers.popitem(last=False)
        return found

    async def on_committed(self, writer: RoomWriter) -> None:
        """EventCreator's after-commit hook."""
        events = [p.event for p in writer.persisted]
        if any(e.type == MEMBER for e in events):
            self._servers.pop(writer.room_id, None)
        ours = [e for e in events if domain_of(e.sender) == self.hs.server_name]
        if not ours:
            return
        servers = await self.servers(writer.room_id)
        for event in ours:
            targets = set(servers)
            if event.type == MEMBER and event.state_key and event.membership != "join":
                targets.add(domain_of(event.state_key))
            await self.hs.federation_sender.send_pdu(targets, event.event_id)
