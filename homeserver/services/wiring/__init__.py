"""The wiring of the composition root: `build_homeserver` creates the `Homeserver`
and runs the build steps (one module per group of concerns) in dependency order,
then subscribes the effects of local changes. The only place services are built;
`services/homeserver.py` holds the result and does not import this package."""

from __future__ import annotations

from federation.keys import SigningKey
from homeserver.config import Config
from homeserver.services.homeserver import Homeserver
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.wiring.delivery import build_media, build_push_and_sync, build_reads
from homeserver.services.wiring.foundation import build_core, build_e2ee, build_federation
from homeserver.services.wiring.operators import build_appservices_and_admin, build_voip
from homeserver.services.wiring.people import build_accounts
from homeserver.services.wiring.room_graph import (
    build_ephemeral,
    build_inbound_federation,
    build_rooms,
)
from homeserver.storage.core.pool import Database


def build_homeserver(config: Config, db: Database, signing_key: SigningKey) -> Homeserver:
    """Every service, each after everything it is given."""
    hs = Homeserver(config=config, db=db, signing_key=signing_key)
    hs.event_cache = EventCache(config.event_cache_size, config.caches_state_entries_size)
    build_core(hs)
    build_federation(hs)
    build_e2ee(hs)
    build_accounts(hs)
    build_rooms(hs)
    build_ephemeral(hs)
    build_inbound_federation(hs)
    build_push_and_sync(hs)
    build_media(hs)
    build_reads(hs)
    build_voip(hs)
    build_appservices_and_admin(hs)
    hs.subscribe()
    return hs
