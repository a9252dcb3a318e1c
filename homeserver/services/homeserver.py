"""The running homeserver: configuration, database, signing key and services,
handed to every API handler through the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field

from federation.keys import SigningKey
from homeserver.config import Config
from homeserver.services.devices import SeenThrottle
from homeserver.services.events import EventCache, EventCreator
from homeserver.services.membership import MembershipService
from homeserver.services.ratelimit import RateLimiter
from homeserver.services.notifier import Notifier
from homeserver.services.rooms import RoomCreator
from homeserver.services.send import SendService
from homeserver.services.streams import StreamAllocator
from homeserver.storage.pool import Database


@dataclass
class Homeserver:
    config: Config
    db: Database
    signing_key: SigningKey
    devices_seen: SeenThrottle = field(default_factory=SeenThrottle)
    # `await hs.ratelimiter.check("login", key, requester)`; see services/ratelimit.py.
    ratelimiter: RateLimiter = field(init=False)
    event_cache: EventCache = field(default_factory=EventCache)
    streams: StreamAllocator = field(init=False)
    notifier: Notifier = field(init=False)
    events: EventCreator = field(init=False)
    rooms: RoomCreator = field(init=False)
    membership: MembershipService = field(init=False)
    send: SendService = field(init=False)

    def __post_init__(self) -> None:
        self.ratelimiter = RateLimiter.from_config(self.config)
        self.streams = StreamAllocator(self.db.conninfo)
        self.notifier = Notifier(self.db.conninfo)
        self.events = EventCreator(
            self.db, self.signing_key, self.event_cache, self.streams, self.notifier
        )
        self.rooms = RoomCreator(
            self.db, self.events, self.config.server_name, self.config.default_room_version
        )
        self.membership = MembershipService(self.db, self.events, self.config.server_name)
        self.send = SendService(self.db, self.events)

    async def start(self) -> None:
        await self.notifier.start()

    async def close(self) -> None:
        """Release what the services hold; the database pool belongs to the caller."""
        await self.notifier.stop()
        await self.streams.close()

    @property
    def server_name(self) -> str:
        return self.config.server_name
