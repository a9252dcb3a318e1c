"""The running homeserver: configuration, database, signing key and services,
handed to every API handler through the aiohttp application."""

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
from homeserver.services.accounts.profile import ProfileService
from homeserver.services.accounts.registration import RegistrationService, RegistrationTokens
from homeserver.services.accounts.uia import UiaService
from homeserver.services.admin.rooms import AdminRoomService
from homeserver.services.admin.users import AdminUserService
from homeserver.services.appservices.registry import (
    AppServiceAuth,
    AppServiceRegistry,
    load_registry,
)
from homeserver.services.appservices.sender import AppServiceSender
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.directory.hierarchy import HierarchyService
from homeserver.services.directory.rooms import DirectoryService
from homeserver.services.directory.users import UserDirectoryService
from homeserver.services.e2ee.cross_signing import CrossSigningService
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.e2ee.key_backup import KeyBackupService
from homeserver.services.e2ee.keys import E2EEService
from homeserver.services.ephemeral.presence import PresenceService
from homeserver.services.ephemeral.receipts import ReceiptService
from homeserver.services.ephemeral.to_device import ToDeviceService
from homeserver.services.ephemeral.typing import TypingService
from homeserver.services.media.remote import RemoteMedia
from homeserver.services.media.repository import MediaService
from homeserver.services.media.thumbnails import ThumbnailService
from homeserver.services.media.url_previews import UrlPreviewService
from homeserver.services.push.gateway import PushSender
from homeserver.services.push.notifications import NotificationService
from homeserver.services.push.pushers import PusherService
from homeserver.services.push.rules import PushRuleService
from homeserver.services.remote.backfill import Backfiller
from homeserver.services.remote.client import FederationClient
from homeserver.services.remote.device_lists import FederatedDeviceLists
from homeserver.services.remote.edus import EduAnnouncer
from homeserver.services.remote.inbound import FederationInbound
from homeserver.services.remote.joins import FederationMembership
from homeserver.services.remote.keyring import KeyRing
from homeserver.services.remote.keys import FederatedKeys
from homeserver.services.remote.reads import FederationReads
from homeserver.services.remote.resident import ResidentMembership
from homeserver.services.remote.room_servers import RoomServers
from homeserver.services.remote.sender import FederationSender
from homeserver.services.rooms.creation import RoomCreator
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.reports import ReportService
from homeserver.services.rooms.send import SendService
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.services.rooms.state import RoomStateService
from homeserver.services.rooms.upgrade import RoomUpgrader
from homeserver.services.rooms.writer import EventCache, EventCreator
from homeserver.services.sync.sync import SyncService
from homeserver.services.timeline.messages import MessageService
from homeserver.services.timeline.relations import RelationService
from homeserver.services.timeline.search import SearchService
from homeserver.storage.core.pool import Database
from homeserver.storage.media.files import MediaFiles


@dataclass
class Homeserver:
    config: Config
    db: Database
    signing_key: SigningKey
    devices_seen: SeenThrottle = field(default_factory=SeenThrottle)
    token_cache: TokenCache = field(default_factory=TokenCache)
    # `await hs.ratelimiter.check("login", key, requester)`; see services/core/ratelimit.py.
    ratelimiter: RateLimiter = field(init=False)
    # Services the API handlers call, built in _build_accounts and _build_reads.
    auth: AuthService = field(init=False)
    devices: DeviceService = field(init=False)
    accounts: AccountService = field(init=False)
    login: LoginService = field(init=False)
    uia: UiaService = field(init=False)
    registration: RegistrationService = field(init=False)
    registration_tokens: RegistrationTokens = field(init=False)
    account_data: AccountDataService = field(init=False)
    filters: FilterService = field(init=False)
    profile: ProfileService = field(init=False)
    room_state: RoomStateService = field(init=False)
    messages: MessageService = field(init=False)
    relations: RelationService = field(init=False)
    server_acl: ServerAclService = field(init=False)
    admin_users: AdminUserService = field(init=False)
    admin_rooms: AdminRoomService = field(init=False)
    event_cache: EventCache = field(default_factory=EventCache)
    streams: StreamAllocator = field(init=False)
    notifier: Notifier = field(init=False)
    events: EventCreator = field(init=False)
    rooms: RoomCreator = field(init=False)
    membership: MembershipService = field(init=False)
    deactivations: Deactivations = field(init=False)
    send: SendService = field(init=False)
    directory: DirectoryService = field(init=False)
    upgrader: RoomUpgrader = field(init=False)
    hierarchy: HierarchyService = field(init=False)
    search: SearchService = field(init=False)
    reports: ReportService = field(init=False)
    device_lists: DeviceLists = field(init=False)
    cross_signing: CrossSigningService = field(init=False)
    e2ee: E2EEService = field(init=False)
    key_backup: KeyBackupService = field(init=False)
    user_directory: UserDirectoryService = field(init=False)
    typing: TypingService = field(init=False)
    receipts: ReceiptService = field(init=False)
    presence: PresenceService = field(init=False)
    to_device: ToDeviceService = field(init=False)
    sync: SyncService = field(init=False)
    federation_client: FederationClient = field(init=False)
    keyring: KeyRing = field(init=False)
    federation_sender: FederationSender = field(init=False)
    inbound: FederationInbound = field(init=False)
    resident: ResidentMembership = field(init=False)
    federation_reads: FederationReads = field(init=False)
    backfiller: Backfiller = field(init=False)
    room_servers: RoomServers = field(init=False)
    edu_announcer: EduAnnouncer = field(init=False)
    federated_device_lists: FederatedDeviceLists = field(init=False)
    federated_keys: FederatedKeys = field(init=False)
    push_rules: PushRuleService = field(init=False)
    notifications: NotificationService = field(init=False)
    pushers: PusherService = field(init=False)
    push_sender: PushSender = field(init=False)
    media: MediaService = field(init=False)
    appservices: AppServiceRegistry = field(init=False)
    appservice_auth: AppServiceAuth = field(init=False)
    appservice_sender: AppServiceSender = field(init=False)
    thumbnails: ThumbnailService = field(init=False)
    url_previews: UrlPreviewService = field(init=False)

    def __post_init__(self) -> None:
        self.ratelimiter = RateLimiter.from_config(self.config)
        self.streams = StreamAllocator(self.db)
        self.notifier = Notifier(self.db)
        self.events = EventCreator(
            self.db, self.signing_key, self.event_cache, self.streams, self.notifier
        )
        self.rooms = RoomCreator(
            self.db, self.events, self.config.server_name, self.config.default_room_version
        )
        self.push_rules = PushRuleService(self.db, self.streams, self.notifier)
        self.membership = MembershipService(self.db, self.events, self.server_name, self.push_rules)
        self.send = SendService(self.db, self.events)
        self.directory = DirectoryService(self.db, self.events, self.config.server_name)
        self.upgrader = RoomUpgrader(self.db, self.events, self.server_name, self.push_rules)
        self.hierarchy = HierarchyService(self.events)
        self.search = SearchService(self.events)
        self.reports = ReportService(self.events)
        self.device_lists = DeviceLists(self.db, self.streams, self.notifier)
        self._build_accounts()
        self.deactivations = Deactivations(
            self.db, self.device_lists, self.membership, self.token_cache
        )
        self.cross_signing = CrossSigningService(self.db, self.device_lists)
        self.e2ee = E2EEService(
            self.db, self.device_lists, self.cross_signing, self.config.server_name
        )
        self.key_backup = KeyBackupService(self.db)
        self.user_directory = UserDirectoryService(
            self.db, self.config.user_directory_search_all_users
        )
        self.typing = TypingService(self.db, self.notifier)
        self.receipts = ReceiptService(self.db, self.streams, self.notifier)
        self.presence = PresenceService(
            self.db, self.streams, self.notifier, enabled=self.config.presence_enabled
        )
        self.to_device = ToDeviceService(
            self.db, self.streams, self.notifier, self.config.server_name
        )
        self.sync = SyncService(self)
        self.notifications = NotificationService(self)
        self.pushers = PusherService(self.db)
        self.push_sender = PushSender(
            self.db, self.event_cache, allowed_ranges=self.config.push_ip_range_whitelist
        )
        self.federation_client = FederationClient(
            self.config.server_name,
            self.signing_key,
            verify_tls=self.config.federation_verify_tls,
            use_tls=self.config.federation_use_tls,
            ca_file=self.config.federation_ca_file,
            allowed_ranges=self.config.federation_ip_range_whitelist,
        )
        self.keyring = KeyRing(
            self.db,
            self.federation_client,
            self.config.server_name,
            self.signing_key,
            trusted_key_servers=self.config.federation_trusted_key_servers,
        )
        self.federation_sender = FederationSender(
            self.db,
            self.federation_client,
            self.config.server_name,
            max_backoff_s=self.config.federation_max_retry_interval_s,
        )
        self.federation_client.add_listener(self.federation_sender.on_contact)
        self.inbound = FederationInbound(self)
        self.resident = ResidentMembership(self)
        self.federation_reads = FederationReads(self)
        self.backfiller = Backfiller(self)
        self._wire_event_hooks()
        self.membership.remote = FederationMembership(self)
        self.rooms.remote = self.membership.remote
        self._build_reads()
        self._wire_appservices()
        self._wire_federated_e2ee_and_edus()
        self._wire_media()

    def _build_accounts(self) -> None:
        """The account services the API calls: tokens, devices, accounts, logins,
        user-interactive auth, registration, account data and filters."""
        self.auth = AuthService(self.db, self.token_cache)
        # Tokens deleted in other processes; after a lost connection, any of them.
        self.notifier.on("token_deleted", self._evict_token)
        self.notifier.after_reconnect(self.token_cache.clear)
        self.devices = DeviceService(
            self.db, self.device_lists, self.token_cache, self.devices_seen
        )
        config = self.config
        self.accounts = AccountService(self.db, config.server_name, config.argon2_time_cost)
        self.login = LoginService(self.db, config.server_name, config.access_token_lifetime_ms)
        self.uia = UiaService(self.db, config.server_name, self.login)
        self.registration = RegistrationService(
            self.db,
            config.server_name,
            open_registration=config.open_registration,
            requires_token=config.registration_requires_token,
            accounts=self.accounts,
            login=self.login,
            uia=self.uia,
        )
        self.registration_tokens = RegistrationTokens(self.db)
        self.account_data = AccountDataService(self.db, self.streams, self.notifier)
        self.filters = FilterService(self.db)

    def _build_reads(self) -> None:
        """Services the API calls that need federation, membership or deactivation:
        profiles, room reads (history holes are backfilled), server ACLs, admin."""
        self.profile = ProfileService(
            self.db,
            self.config.server_name,
            self.federation_client,
            self.ratelimiter,
            self.membership,
        )
        self.room_state = RoomStateService(self.db, self.event_cache)
        self.messages = MessageService(self.db, self.event_cache, self.backfiller)
        self.relations = RelationService(self.db, self.event_cache)
        self.server_acl = ServerAclService(self.db, self.event_cache)
        self.admin_users = AdminUserService(
            self.db,
            self.config.server_name,
            self.token_cache,
            self.accounts,
            self.devices,
            self.membership,
            self.deactivations,
        )
        self.admin_rooms = AdminRoomService(self.db, self.config.server_name, self.event_cache)

    def _wire_event_hooks(self) -> None:
        """What each transaction of events does besides writing them: store push actions
        and queue the events for other servers; once committed, wake push delivery and
        federation (application services: in _wire_appservices)."""
        self.room_servers = RoomServers(self.db, self.config.server_name, self.federation_sender)
        self.events.add_before_commit(self.notifications.before_commit)
        self.events.add_before_commit(self.room_servers.before_commit)
        self.events.add_after_commit(lambda w: self.push_sender.notify_users(w.notified_users))
        self.events.add_after_commit(self.room_servers.after_commit)

    def _wire_appservices(self) -> None:
        """Application services from their registration files (ConfigError if bad)."""
        self.appservices = load_registry(
            self.config.app_service_config_files, self.config.server_name
        )
        self.appservice_auth = AppServiceAuth(
            self.db, self.config.server_name, self.appservices, self.accounts, self.login
        )
        self.ratelimiter.exempt_appservices = frozenset(
            s.id for s in self.appservices.services if not s.rate_limited
        )
        self.appservice_sender = AppServiceSender(
            self.db,
            self.event_cache,
            self.appservices,
            typing=self.typing,
            presence=self.presence,
        )
        self.events.add_after_commit(lambda _: self.appservice_sender.notify())

    def _wire_media(self) -> None:
        """The media repository, fetching remote media over our federation client."""
        files = MediaFiles(self.config.media_dir)
        self.media = MediaService(
            self.db, files, self.config.server_name, self.config.media_max_upload_size
        )
        self.media.fetch_remote = RemoteMedia(
            self.db,
            files,
            self.federation_client,
            max_size=self.config.media_max_upload_size,
            time_limit_s=self.config.media_remote_timeout_s,
        ).fetch
        self.thumbnails = ThumbnailService(self.media)
        self.url_previews = UrlPreviewService(
            self.db,
            self.media,
            enabled=self.config.media_url_preview_enabled,
            max_size=self.config.media_url_preview_max_size,
            timeout_s=self.config.media_url_preview_timeout_s,
            allowed_ranges=self.config.media_url_preview_ip_range_whitelist,
            url_blacklist=self.config.media_url_preview_url_blacklist,
        )

    def _wire_federated_e2ee_and_edus(self) -> None:
        """Plug federation into the local services' seams: our users' changes go out as
        EDUs, and key queries and claims for remote users go to their servers."""
        self.edu_announcer = EduAnnouncer(self)
        self.federated_device_lists = FederatedDeviceLists(self)
        self.federated_keys = FederatedKeys(self)
        for producer in (self.typing, self.receipts, self.presence):
            producer.add_listener(self.appservice_sender.ephemeral_changed)
        self.typing.add_listener(self.edu_announcer.typing)
        self.receipts.add_listener(self.edu_announcer.receipt)
        self.presence.add_listener(self.edu_announcer.presence)
        self.to_device.send_remote = self.edu_announcer.to_device
        self.device_lists.add_listener(self.federated_device_lists.announce)
        self.cross_signing.add_listener(self.federated_device_lists.announce_signing_keys)
        self.e2ee.query_remote = self.federated_keys.query
        self.e2ee.claim_remote = self.federated_keys.claim

    async def _evict_token(self, payload: dict[str, Any]) -> None:
        try:
            self.token_cache.evict(bytes.fromhex(payload["token_hash"]))
        except (KeyError, TypeError, ValueError):
            return

    async def start(self) -> None:
        await self.notifier.start()
        await self.presence.start()
        await self.federation_client.start()
        await self.federation_sender.start()
        await self.push_sender.start()
        await self.appservice_sender.start()
        await self.notifications.start()
        await self.deactivations.start()
        await asyncio.to_thread(self.media.files.sweep_stale)

    async def close(self) -> None:
        """Release what the services hold; the database pool belongs to the caller."""
        await self.deactivations.close()
        await self.backfiller.close()
        await self.federated_device_lists.close()
        await self.notifications.close()
        await self.push_sender.close()
        await self.appservice_sender.close()
        await self.federation_sender.close()
        await self.federation_client.close()
        await self.url_previews.close()
        await self.presence.stop()
        self.typing.close()
        await self.notifier.stop()
        await self.streams.close()

    @property
    def server_name(self) -> str:
        return self.config.server_name
