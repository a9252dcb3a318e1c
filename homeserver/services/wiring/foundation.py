"""Composition-root steps: the core (streams, notifier, rate limits, the event writer), the
outbound federation side, device lists and keys: what later steps are given.

Each step sets the `Homeserver` fields it builds from fields earlier steps set;
the order is `build_homeserver`'s (`services/wiring/__init__.py`)."""

from __future__ import annotations

from homeserver.services.appservices.registry import load_registry
from homeserver.services.core.health import Health
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.e2ee.cross_signing import CrossSigningService
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.e2ee.key_backup import KeyBackupService
from homeserver.services.e2ee.keys import E2EEKeys
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import FederationClient
from homeserver.services.remote.device_lists import RemoteDeviceLists
from homeserver.services.remote.keyring import KeyRing, old_keys_from
from homeserver.services.remote.keys import RemoteKeys
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.sender import FederationSender
from homeserver.services.remote.served_keys import ServedKeys
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.services.rooms.writer import EventWriter
from homeserver.storage.core.replicas import Replicas


def build_core(hs: Homeserver) -> None:
    """Application services come first: the rate limiter exempts some of them."""
    config = hs.config
    hs.appservices_registry = load_registry(config.app_service_config_files, config.server_name)
    hs.ratelimit = RateLimiter.from_config(
        config,
        hs.db,
        exempt_appservices=frozenset(
            s.id for s in hs.appservices_registry.services if not s.rate_limited
        ),
    )
    hs.streams = StreamAllocator(hs.db)
    hs.replicas = Replicas(hs.db, config.database_replicas, config.database_pool_size)
    hs.notifier = Notifier(hs.db)
    hs.health = Health(hs.db, hs.notifier)
    hs.writer = EventWriter(hs.db, hs.signing_key, hs.event_cache, hs.streams, hs.notifier)
    hs.server_acl = ServerAclService(hs.db, hs.event_cache)


def build_federation(hs: Homeserver) -> None:
    """The outbound side every federated service uses."""
    config = hs.config
    hs.remote_client = FederationClient(
        config.server_name,
        hs.signing_key,
        verify_tls=config.federation_verify_tls,
        use_tls=config.federation_use_tls,
        ca_file=config.federation_ca_file,
        allowed_ranges=config.federation_ip_range_whitelist,
    )
    hs.keyring = KeyRing(
        hs.db,
        hs.remote_client,
        config.server_name,
        hs.signing_key,
        trusted_key_servers=config.federation_trusted_key_servers,
        old_keys=old_keys_from(config.old_signing_keys),
    )
    hs.remote_sender = FederationSender(
        hs.db,
        hs.remote_client,
        config.server_name,
        max_backoff_s=config.federation_max_retry_interval_s,
    )
    hs.room_locks = RoomLocks()


def build_e2ee(hs: Homeserver) -> None:
    """Device lists and keys: remote users' before the local service that asks
    for them."""
    server_name = hs.server_name
    hs.e2ee_device_lists = DeviceLists(hs.db, hs.streams, hs.notifier)
    hs.cross_signing = CrossSigningService(hs.db, hs.e2ee_device_lists)
    hs.remote_device_lists = RemoteDeviceLists(
        hs.db,
        hs.e2ee_device_lists,
        hs.cross_signing,
        hs.remote_client,
        hs.remote_sender,
        server_name,
    )
    hs.remote_keys = RemoteKeys(hs.db, hs.remote_device_lists, hs.remote_client, server_name)
    hs.e2ee_keys = E2EEKeys(
        hs.db, hs.e2ee_device_lists, hs.cross_signing, hs.remote_keys, server_name
    )
    hs.served_keys = ServedKeys(hs.e2ee_keys, server_name)
    hs.key_backup = KeyBackupService(hs.db)
