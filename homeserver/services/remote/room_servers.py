"""Sending our new events to the other servers in their room: every server with a
joined member, plus the server of a remote user we invite, kick or ban.

The events are queued in the transaction that writes them (`before_commit`), so that a
crash cannot commit an event that its room's other servers never hear of, and their
senders are woken once it has committed (`after_commit`). The destinations are the
room's servers after the transaction, as its own connection sees them: a member who
just left still gets their leave through the invite/kick/ban rule.

The servers of a room are cached by the room's state group when the events were
written: a state group never changes, and any change of membership, by any process
(local or received over federation), makes a new one. So the cache is never stale, and
needs no invalidation across processes.
"""

from __future__ import annotations

from collections import OrderedDict

from federation.events import MEMBER
from federation.identifiers import domain_of
from homeserver.services.remote.sender import FederationSender
from homeserver.services.rooms.writer import RoomWriter
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import room_servers

CACHED_ROOMS = 10_000


class RoomServers:
    def __init__(self, db: Database, server_name: str, sender: FederationSender) -> None:
        self.db = db
        self.server_name = server_name
        self.sender = sender
        # room id -> (its state group, the servers with a joined member at that group)
        self._servers: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()

    async def servers(self, room_id: str) -> frozenset[str]:
        """The servers with a joined member in the room, as committed."""
        async with self.db.pool.connection() as conn:
            return frozenset(await room_servers.servers_in_room(conn, room_id))

    async def _servers_at_start(self, writer: RoomWriter) -> frozenset[str]:
        """The room's servers at the state group the transaction started from."""
        group = writer.start_state_group
        cached = self._servers.get(writer.room_id)
        if cached is not None and cached[0] == group:
            self._servers.move_to_end(writer.room_id)
            return cached[1]
        found = frozenset(await room_servers.servers_in_room(writer.conn, writer.room_id))
        if group is not None:
            self._servers[writer.room_id] = (group, found)
            if len(self._servers) > CACHED_ROOMS:
                self._servers.popitem(last=False)
        return found

    async def before_commit(self, writer: RoomWriter) -> None:
        """EventWriter's in-transaction hook: queue our new events for the room's servers."""
        events = [p.event for p in writer.persisted]
        ours = [e for e in events if domain_of(e.sender) == self.server_name]
        if not ours:
            return
        if any(e.type == MEMBER for e in events):
            # The membership this transaction wrote is visible only on its connection,
            # and may still roll back: ask there, and leave the cache alone.
            servers = frozenset(await room_servers.servers_in_room(writer.conn, writer.room_id))
        else:
            servers = await self._servers_at_start(writer)
        for event in ours:
            targets = set(servers)
            if event.type == MEMBER and event.state_key and event.membership != "join":
                targets.add(domain_of(event.state_key))
            queued = await self.sender.queue_pdu(writer.conn, targets, event.event_id)
            writer.queued_destinations.update(queued)

    def after_commit(self, writer: RoomWriter) -> None:
        """EventWriter's after-commit hook: send what the transaction queued."""
        self.sender.wake(writer.queued_destinations)
