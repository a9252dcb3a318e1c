"""The composition root: the running homeserver's configuration, database, signing key
and services, handed to every API handler through the aiohttp application.

`build_homeserver` (`services/wiring/`) builds it, the only place services are built:
each service gets what it uses in its constructor, in dependency order (a service after
everything it is given), and effects of local changes are subscribed at the end
(`Homeserver.subscribe`). This module holds the result, starts and closes it; it does
not import the wiring, and no service module imports this one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from federation.keys import SigningKey
from homeserver.config import Config
from homeserver.services.accounts.account_data import AccountDataService
from homeserver.services.accounts.accounts import AccountService
from homeserver.services.accounts.auth import AuthService, TokenCache
from homeserver.services.accounts.deactivation import Deactivations
from homeserver.services.accounts.devices import DeviceService, SeenThrottle
from homeserver.services.accounts.filters import FilterService
from homeserver.services.accounts.login import LoginService
from homeserver.services.accounts.openid import OpenIdService
from homeserver.services.accounts.passwords import Passwords
from homeserver.services.accounts.profile import ProfileService
from homeserver.services.accounts.registration import RegistrationService
from homeserver.services.accounts.registration_tokens import RegistrationTokens
from homeserver.services.accounts.uia import UiaService
from homeserver.services.admin.abuse_reports import AdminReportService
from homeserver.services.admin.destinations import AdminDestinationService
from homeserver.services.admin.media import AdminMediaService
from homeserver.services.admin.moderation import AdminModerationService
from homeserver.services.admin.room_history import AdminRoomHistory
from homeserver.services.admin.room_tools import AdminRoomTools
from homeserver.services.admin.rooms import AdminRoomService
from homeserver.services.admin.server_notices import ServerNotices
from homeserver.services.admin.shared_secret import SharedSecretRegistration
from homeserver.services.admin.tasks import AdminTasks
from homeserver.services.admin.users import AdminUserService
from homeserver.services.appservices.auth import AppServiceAuth
from homeserver.services.appservices.registry import AppServiceRegistry
from homeserver.services.appservices.sender import AppServiceSender
from homeserver.services.core.health import Health
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.directory.hierarchy import HierarchyService
from homeserver.services.directory.rooms import RoomDirectory
from homeserver.services.directory.summary import RoomSummaryService
from homeserver.services.directory.users import UserDirectoryService
from homeserver.services.e2ee.cross_signing import CrossSigningService
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.e2ee.key_backup import KeyBackupService
from homeserver.services.e2ee.keys import E2EEKeys
from homeserver.services.email.mailer import Mailer
from homeserver.services.ephemeral.presence import PresenceService
from homeserver.services.ephemeral.receipts import ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import TypingService
from homeserver.services.media.remote import RemoteMedia
from homeserver.services.media.repository import MediaRepository
from homeserver.services.media.retention import MediaRetention
from homeserver.services.media.thumbnails import ThumbnailService
from homeserver.services.media.url_previews import UrlPreviewService
from homeserver.services.push.email_notifier import EmailNotifier
from homeserver.services.push.gateway import PushGateway
from homeserver.services.push.notifications import NotificationService, notified_rooms
from homeserver.services.push.pushers import PusherService
from homeserver.services.push.rules import PushRuleService
from homeserver.services.remote.backfill import Backfiller
from homeserver.services.remote.client import FederationClient
from homeserver.services.remote.device_lists import RemoteDeviceLists
from homeserver.services.remote.edu_announcer import EduAnnouncer
from homeserver.services.remote.edus import InboundEdus
from homeserver.services.remote.inbound import FederationInbound
from homeserver.services.remote.joins import FederationJoins
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.keys import RemoteKeys
from homeserver.services.remote.partial_state import PartialStateSync
from homeserver.services.remote.reads import FederationReads
from homeserver.services.remote.resident import ResidentMembership
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.room_servers import RoomServers
from homeserver.services.remote.sender import FederationSender
from homeserver.services.remote.served_keys import ServedKeys
from homeserver.services.rooms.creation import RoomCreator
from homeserver.services.rooms.delayed_events import DelayedEvents
from homeserver.services.rooms.event_cache import EventCache
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.reports import ReportService
from homeserver.services.rooms.send import SendService
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.services.rooms.state import RoomStateService
from homeserver.services.rooms.upgrade import RoomUpgrader
from homeserver.services.rooms.writer import EventWriter
from homeserver.services.sliding_sync.extensions import Extensions
from homeserver.services.sliding_sync.sliding_sync import SlidingSyncService, record_room_facts
from homeserver.services.sso.sso import SsoService
from homeserver.services.sync.sync import SyncService
from homeserver.services.threepids.threepids import ThreepidService
from homeserver.services.threepids.validation import ThreepidValidation
from homeserver.services.timeline.messages import MessageService
from homeserver.services.timeline.relations import RelationService
from homeserver.services.timeline.search import SearchService
from homeserver.services.voip.turn import TurnService
from homeserver.storage.core.pool import Database
from homeserver.storage.core.replicas import Replicas
from homeserver.storage.media.files import MediaFiles


@dataclass
class Homeserver:
    """Every service, as a field; create it with `build_homeserver`, which sets them."""

    # Naming: a field is named for the module that defines its class, and the class
    # for the same thing: `services/<package>/<module>.py` gives `hs.<module>`, or
    # `hs.<package>_<module>` where the module's name alone is ambiguous: always when
    # another package has a module of that name (`hs.accounts_auth` and
    # `hs.appservices_auth`, `hs.e2ee_keys` and `hs.remote_keys`, `hs.rooms_state`),
    # and where it names a part every subsystem has (client, sender, registry,
    # repository, gateway, rules, remote: `hs.remote_client`, `hs.push_gateway`).
    # Not services, so named for what they are: the inputs (`config`, `db`,
    # `signing_key`) and state several services share (`event_cache`, `token_cache`,
    # `devices_seen`, `media_files`). tests/unit/test_composition_root.py checks it.
    config: Config
    db: Database
    signing_key: SigningKey
    event_cache: EventCache = field(init=False)
    token_cache: TokenCache = field(default_factory=TokenCache)
    devices_seen: SeenThrottle = field(default_factory=SeenThrottle)
    media_files: MediaFiles = field(init=False)
    # Where reads that tolerate a replica go (`database.replicas`).
    replicas: Replicas = field(init=False)
    # core/
    notifier: Notifier = field(init=False)
    health: Health = field(init=False)
    streams: StreamAllocator = field(init=False)
    # `await hs.ratelimit.check("login", key, requester)`; see services/core/ratelimit.py.
    ratelimit: RateLimiter = field(init=False)
    # accounts/
    accounts_auth: AuthService = field(init=False)
    devices: DeviceService = field(init=False)
    accounts: AccountService = field(init=False)
    login: LoginService = field(init=False)
    passwords: Passwords = field(init=False)
    uia: UiaService = field(init=False)
    mailer: Mailer = field(init=False)
    validation: ThreepidValidation = field(init=False)
    threepids: ThreepidService = field(init=False)
    registration: RegistrationService = field(init=False)
    registration_tokens: RegistrationTokens = field(init=False)
    sso: SsoService = field(init=False)
    account_data: AccountDataService = field(init=False)
    filters: FilterService = field(init=False)
    openid: OpenIdService = field(init=False)
    profile: ProfileService = field(init=False)
    deactivation: Deactivations = field(init=False)
    # rooms/
    writer: EventWriter = field(init=False)
    server_acl: ServerAclService = field(init=False)
    creation: RoomCreator = field(init=False)
    membership: MembershipService = field(init=False)
    send: SendService = field(init=False)
    delayed_events: DelayedEvents = field(init=False)
    upgrade: RoomUpgrader = field(init=False)
    reports: ReportService = field(init=False)
    rooms_state: RoomStateService = field(init=False)
    # directory/ and timeline/
    directory_rooms: RoomDirectory = field(init=False)
    directory_users: UserDirectoryService = field(init=False)
    summary: RoomSummaryService = field(init=False)
    hierarchy: HierarchyService = field(init=False)
    search: SearchService = field(init=False)
    messages: MessageService = field(init=False)
    relations: RelationService = field(init=False)
    # e2ee/
    e2ee_device_lists: DeviceLists = field(init=False)
    cross_signing: CrossSigningService = field(init=False)
    e2ee_keys: E2EEKeys = field(init=False)
    key_backup: KeyBackupService = field(init=False)
    # ephemeral/ and sync/
    typing: TypingService = field(init=False)
    receipts: ReceiptService = field(init=False)
    presence: PresenceService = field(init=False)
    to_device: ToDeviceService = field(init=False)
    sync: SyncService = field(init=False)
    sliding_sync_extensions: Extensions = field(init=False)
    sliding_sync: SlidingSyncService = field(init=False)
    # remote/: the server's federation behaviour
    remote_client: FederationClient = field(init=False)
    keyring: KeyRing = field(init=False)
    remote_sender: FederationSender = field(init=False)
    room_locks: RoomLocks = field(init=False)
    room_servers: RoomServers = field(init=False)
    remote_device_lists: RemoteDeviceLists = field(init=False)
    remote_keys: RemoteKeys = field(init=False)
    served_keys: ServedKeys = field(init=False)
    joins: FederationJoins = field(init=False)
    partial_state: PartialStateSync = field(init=False)
    edu_announcer: EduAnnouncer = field(init=False)
    edus: InboundEdus = field(init=False)
    inbound: FederationInbound = field(init=False)
    resident: ResidentMembership = field(init=False)
    reads: FederationReads = field(init=False)
    backfill: Backfiller = field(init=False)
    # push/
    push_rules: PushRuleService = field(init=False)
    notifications: NotificationService = field(init=False)
    pushers: PusherService = field(init=False)
    push_gateway: PushGateway = field(init=False)
    email_notifier: EmailNotifier = field(init=False)
    # media/
    media_remote: RemoteMedia = field(init=False)
    media_repository: MediaRepository = field(init=False)
    retention: MediaRetention = field(init=False)
    thumbnails: ThumbnailService = field(init=False)
    url_previews: UrlPreviewService = field(init=False)
    # appservices/
    appservices_registry: AppServiceRegistry = field(init=False)
    appservices_auth: AppServiceAuth = field(init=False)
    appservices_sender: AppServiceSender = field(init=False)
    # voip/
    turn: TurnService = field(init=False)
    # admin/
    admin_users: AdminUserService = field(init=False)
    admin_rooms: AdminRoomService = field(init=False)
    admin_moderation: AdminModerationService = field(init=False)
    shared_secret: SharedSecretRegistration = field(init=False)
    abuse_reports: AdminReportService = field(init=False)
    admin_destinations: AdminDestinationService = field(init=False)
    admin_room_tools: AdminRoomTools = field(init=False)
    admin_media: AdminMediaService = field(init=False)
    server_notices: ServerNotices = field(init=False)
    admin_room_history: AdminRoomHistory = field(init=False)
    admin_tasks: AdminTasks = field(init=False)

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def subscribe(self) -> None:
        """The effects of local changes, in the order they are told: application
        services are woken first, then federation sends our users' changes out."""
        # Tokens deleted in other processes; after a lost connection, any of them.
        self.notifier.on("token_deleted", self._evict_token)
        self.notifier.after_reconnect(self.token_cache.clear)
        self.remote_client.add_listener(self.remote_sender.on_contact)
        self.remote_client.add_failure_listener(self.remote_sender.on_unreachable)
        for producer in (self.typing, self.receipts, self.presence):
            producer.add_listener(self.appservices_sender.ephemeral_changed)
        self.typing.add_listener(self.edu_announcer.typing_changed)
        self.receipts.add_listener(self.edu_announcer.receipt_stored)
        self.presence.add_listener(self.edu_announcer.presence_changed)
        self.e2ee_device_lists.add_listener(self.remote_device_lists.announce)
        self.cross_signing.add_listener(self.remote_device_lists.announce_signing_keys)
        # Each transaction of events also stores push actions and queues the events
        # for other servers; once committed, push, federation and application
        # services are woken.
        self.account_data.add_ignores_listener(self.notifications.ignores_changed)
        self.writer.add_before_group_commit(self.notifications.before_commit)
        self.writer.add_before_commit(self.room_servers.before_commit)
        self.writer.add_before_commit(self.delayed_events.before_commit)
        self.writer.add_before_group_commit(record_room_facts)
        self.writer.add_after_commit(
            lambda w: self.push_gateway.notify_users(
                w.notified_users, notified_rooms(w), w.notified_pushers
            )
        )
        self.writer.add_after_commit(
            lambda w: self.email_notifier.notify_users(w.notified_users, notified_rooms(w))
        )
        self.writer.add_after_commit(self.room_servers.after_commit)
        self.writer.add_after_commit(lambda _: self.appservices_sender.notify())

    async def _evict_token(self, payload: dict[str, Any]) -> None:
        try:
            self.token_cache.evict(bytes.fromhex(payload["token_hash"]))
        except (KeyError, TypeError, ValueError):
            return

    async def start(self) -> None:
        await self.notifier.start()
        await self.replicas.start()
        await self.presence.start()
        await self.remote_client.start()
        await self.remote_sender.start()
        await self.push_gateway.start()
        await self.email_notifier.start()
        await self.appservices_sender.start()
        await self.notifications.start()
        await self.deactivation.start()
        self.delayed_events.start()
        self.admin_rooms.start()
        self.admin_tasks.start()
        self.retention.start()
        await self.partial_state.start()
        await asyncio.to_thread(self.media_files.sweep_stale)

    async def close(self) -> None:
        """Release what the services hold; the database pool belongs to the caller."""
        await self.delayed_events.close()
        await self.send.close()
        await self.sliding_sync.close()
        await self.admin_rooms.close()
        await self.retention.close()
        await self.admin_tasks.close()
        await self.deactivation.close()
        await self.backfill.close()
        await self.partial_state.close()
        await self.remote_device_lists.close()
        await self.notifications.close()
        await self.validation.close()
        await self.push_gateway.close()
        await self.email_notifier.close()
        await self.appservices_sender.close()
        await self.remote_sender.close()
        await self.remote_client.close()
        await self.url_previews.close()
        await self.media_remote.close()
        await self.sso.close()
        await self.presence.stop()
        self.typing.close()
        await self.notifier.stop()
        await self.replicas.close()
        await self.streams.close()
