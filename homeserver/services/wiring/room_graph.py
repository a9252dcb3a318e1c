"""Composition-root steps: local rooms, ephemeral data (typing, receipts, presence,
to-device), and the inbound federation side: what other servers send and ask us.

Each step sets the `Homeserver` fields it builds from fields earlier steps set;
the order is `build_homeserver`'s (`services/wiring/__init__.py`)."""

from __future__ import annotations

from homeserver.services.accounts.deactivation import Deactivations
from homeserver.services.directory.hierarchy import HierarchyService
from homeserver.services.directory.rooms import RoomDirectory
from homeserver.services.directory.summary import RoomSummaryService
from homeserver.services.directory.users import UserDirectoryService
from homeserver.services.ephemeral.presence import PresenceService
from homeserver.services.ephemeral.receipts import ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import TypingService
from homeserver.services.homeserver import Homeserver
from homeserver.services.push.rules import PushRuleService
from homeserver.services.remote.backfill import Backfiller
from homeserver.services.remote.edu_announcer import EduAnnouncer
from homeserver.services.remote.edus import InboundEdus
from homeserver.services.remote.inbound import FederationInbound
from homeserver.services.remote.joins import FederationJoins
from homeserver.services.remote.partial_state import PartialStateSync
from homeserver.services.remote.reads import FederationReads
from homeserver.services.remote.resident import ResidentMembership
from homeserver.services.remote.room_servers import RoomServers
from homeserver.services.rooms.creation import RoomCreator
from homeserver.services.rooms.delayed_events import DelayedEvents
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.reports import ReportService
from homeserver.services.rooms.send import SendService
from homeserver.services.rooms.upgrade import RoomUpgrader
from homeserver.services.timeline.search import SearchService


def build_rooms(hs: Homeserver) -> None:
    """Local rooms; joins through other servers first, which membership and room
    creation (invites of remote users) are given."""
    db, writer, cache, server_name = hs.db, hs.writer, hs.event_cache, hs.server_name
    hs.partial_state = PartialStateSync(
        db, writer, cache, hs.remote_client, hs.keyring, hs.room_locks, hs.notifier, server_name
    )
    hs.joins = FederationJoins(
        db,
        writer,
        cache,
        hs.remote_client,
        hs.keyring,
        hs.room_locks,
        hs.partial_state,
        hs.signing_key,
        server_name,
    )
    hs.push_rules = PushRuleService(db, hs.streams, hs.notifier)
    hs.membership = MembershipService(db, writer, cache, hs.joins, hs.push_rules, server_name)
    hs.creation = RoomCreator(db, writer, hs.joins, server_name, hs.config.default_room_version)
    hs.send = SendService(db, writer)
    hs.delayed_events = DelayedEvents(db, hs.send, hs.config.max_event_delay_duration)
    hs.directory_rooms = RoomDirectory(
        db, hs.replicas, writer, cache, hs.remote_client, server_name
    )
    hs.upgrade = RoomUpgrader(db, writer, cache, hs.push_rules, server_name)
    hs.hierarchy = HierarchyService(db, cache, hs.remote_client, server_name)
    hs.summary = RoomSummaryService(db, hs.hierarchy, hs.joins, server_name)
    hs.search = SearchService(db, cache)
    hs.reports = ReportService(db, cache)
    hs.deactivation = Deactivations(db, hs.e2ee_device_lists, hs.membership, hs.token_cache)
    hs.directory_users = UserDirectoryService(
        db, hs.replicas, hs.config.user_directory_search_all_users
    )


def build_ephemeral(hs: Homeserver) -> None:
    """Typing, receipts, presence and to-device messages; our users' go out as EDUs
    (to-device messages for other servers are handed to the announcer directly)."""
    db, streams, notifier = hs.db, hs.streams, hs.notifier
    hs.typing = TypingService(db, notifier)
    hs.receipts = ReceiptService(db, streams, notifier)
    hs.presence = PresenceService(db, streams, notifier, enabled=hs.config.presence_enabled)
    hs.edu_announcer = EduAnnouncer(db, hs.remote_sender, hs.presence, hs.server_name)
    hs.to_device = ToDeviceService(db, streams, notifier, hs.edu_announcer, hs.server_name)


def build_inbound_federation(hs: Homeserver) -> None:
    """What other servers send and ask us."""
    db, cache, server_name = hs.db, hs.event_cache, hs.server_name
    hs.edus = InboundEdus(
        db,
        hs.server_acl,
        hs.typing,
        hs.receipts,
        hs.presence,
        hs.to_device,
        hs.remote_device_lists,
        server_name,
    )
    hs.inbound = FederationInbound(
        db,
        hs.writer,
        cache,
        hs.remote_client,
        hs.keyring,
        hs.server_acl,
        hs.room_locks,
        hs.edus,
    )
    hs.resident = ResidentMembership(
        db,
        hs.writer,
        cache,
        hs.keyring,
        hs.room_locks,
        hs.remote_sender,
        hs.signing_key,
        server_name,
    )
    hs.room_servers = RoomServers(db, server_name, hs.remote_sender)
    hs.reads = FederationReads(db, hs.replicas, cache, hs.server_acl, hs.room_servers, server_name)
    hs.backfill = Backfiller(
        db,
        cache,
        hs.remote_client,
        hs.keyring,
        hs.inbound,
        hs.room_locks,
        server_name,
    )
