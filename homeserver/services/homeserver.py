"""The composition root: the running homeserver's configuration, database, signing key
and services, built here and only here, handed to every API handler through the
aiohttp application.

Each service gets what it uses in its constructor; the graph is built in dependency
order (a service after everything it is given), and effects of local changes are
subscribed at the end (`_subscribe`). No service module imports this one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from federation.keys import SigningKey
from homeserver.config import Config
from homeserver.config.admin import server_notices as server_notices_settings
from homeserver.config.oidc import providers as oidc_providers
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
from homeserver.services.admin.users import AdminUserService
from homeserver.services.appservices.auth import AppServiceAuth
from homeserver.services.appservices.registry import AppServiceRegistry, load_registry
from homeserver.services.appservices.sender import AppServiceSender
from homeserver.services.core.health import Health
from homeserver.services.core.notifier import Notifier
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.streams import StreamAllocator
from homeserver.services.directory.hierarchy import HierarchyService
from homeserver.services.directory.rooms import RoomDirectory
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
from homeserver.services.media.thumbnails import ThumbnailService
from homeserver.services.media.url_previews import UrlPreviewService
from homeserver.services.push.email_notifier import EmailNotifier
from homeserver.services.push.gateway import PushGateway
from homeserver.services.push.notifications import NotificationService
from homeserver.services.push.pushers import PusherService
from homeserver.services.push.rules import PushRuleService
from homeserver.services.remote.backfill import Backfiller
from homeserver.services.remote.client import FederationClient
from homeserver.services.remote.device_lists import RemoteDeviceLists
from homeserver.services.remote.edu_announcer import EduAnnouncer
from homeserver.services.remote.edus import InboundEdus
from homeserver.services.remote.inbound import FederationInbound
from homeserver.services.remote.joins import FederationJoins
from homeserver.services.remote.keyring import KeyRing, old_keys_from
from homeserver.services.remote.keys import RemoteKeys
from homeserver.services.remote.reads import FederationReads
from homeserver.services.remote.resident import ResidentMembership
from homeserver.services.remote.room_locks import RoomLocks
from homeserver.services.remote.room_servers import RoomServers
from homeserver.services.remote.sender import FederationSender
from homeserver.services.remote.served_keys import ServedKeys
from homeserver.services.rooms.creation import RoomCreator
from homeserver.services.rooms.delayed_events import DelayedEvents
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.rooms.reports import ReportService
from homeserver.services.rooms.send import SendService
from homeserver.services.rooms.server_acl import ServerAclService
from homeserver.services.rooms.state import RoomStateService
from homeserver.services.rooms.upgrade import RoomUpgrader
from homeserver.services.rooms.writer import EventCache, EventWriter
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

    def __post_init__(self) -> None:
        self.event_cache = EventCache(
            self.config.event_cache_size, self.config.caches_state_entries_size
        )
        self._build_core()
        self._build_federation()
        self._build_e2ee()
        self._build_accounts()
        self._build_rooms()
        self._build_ephemeral()
        self._build_inbound_federation()
        self._build_push_and_sync()
        self._build_media()
        self._build_reads()
        self._build_voip()
        self._build_appservices_and_admin()
        self._subscribe()

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def _build_core(self) -> None:
        """Application services come first: the rate limiter exempts some of them."""
        config = self.config
        self.appservices_registry = load_registry(
            config.app_service_config_files, config.server_name
        )
        self.ratelimit = RateLimiter.from_config(
            config,
            self.db,
            exempt_appservices=frozenset(
                s.id for s in self.appservices_registry.services if not s.rate_limited
            ),
        )
        self.streams = StreamAllocator(self.db)
        self.replicas = Replicas(self.db, config.database_replicas, config.database_pool_size)
        self.notifier = Notifier(self.db)
        self.health = Health(self.db, self.notifier)
        self.writer = EventWriter(
            self.db, self.signing_key, self.event_cache, self.streams, self.notifier
        )
        self.server_acl = ServerAclService(self.db, self.event_cache)

    def _build_federation(self) -> None:
        """The outbound side every federated service uses."""
        config = self.config
        self.remote_client = FederationClient(
            config.server_name,
            self.signing_key,
            verify_tls=config.federation_verify_tls,
            use_tls=config.federation_use_tls,
            ca_file=config.federation_ca_file,
            allowed_ranges=config.federation_ip_range_whitelist,
        )
        self.keyring = KeyRing(
            self.db,
            self.remote_client,
            config.server_name,
            self.signing_key,
            trusted_key_servers=config.federation_trusted_key_servers,
            old_keys=old_keys_from(config.old_signing_keys),
        )
        self.remote_sender = FederationSender(
            self.db,
            self.remote_client,
            config.server_name,
            max_backoff_s=config.federation_max_retry_interval_s,
        )
        self.room_locks = RoomLocks()

    def _build_e2ee(self) -> None:
        """Device lists and keys: remote users' before the local service that asks
        for them."""
        server_name = self.server_name
        self.e2ee_device_lists = DeviceLists(self.db, self.streams, self.notifier)
        self.cross_signing = CrossSigningService(self.db, self.e2ee_device_lists)
        self.remote_device_lists = RemoteDeviceLists(
            self.db,
            self.e2ee_device_lists,
            self.cross_signing,
            self.remote_client,
            self.remote_sender,
            server_name,
        )
        self.remote_keys = RemoteKeys(
            self.db, self.remote_device_lists, self.remote_client, server_name
        )
        self.e2ee_keys = E2EEKeys(
            self.db, self.e2ee_device_lists, self.cross_signing, self.remote_keys, server_name
        )
        self.served_keys = ServedKeys(self.e2ee_keys, server_name)
        self.key_backup = KeyBackupService(self.db)

    def _build_accounts(self) -> None:
        """Tokens, devices, accounts, logins, user-interactive auth, registration,
        account data and filters."""
        db, config = self.db, self.config
        self.accounts_auth = AuthService(db, self.token_cache)
        self.devices = DeviceService(
            db, self.e2ee_device_lists, self.token_cache, self.devices_seen
        )
        self.passwords = Passwords(config.argon2_time_cost, config.password_hash_concurrency)
        self.accounts = AccountService(db, config.server_name, self.passwords)
        self.login = LoginService(
            db, config.server_name, config.access_token_lifetime_ms, self.passwords
        )
        self._build_threepids()
        self.uia = UiaService(db, config.server_name, self.login, self.validation)
        self.registration = RegistrationService(
            db,
            config.server_name,
            open_registration=config.open_registration,
            requires_token=config.registration_requires_token,
            accounts=self.accounts,
            login=self.login,
            uia=self.uia,
            threepids=self.threepids,
            email_required="email" in config.registrations_require_3pid,
        )
        self.registration_tokens = RegistrationTokens(db)
        self.account_data = AccountDataService(db, self.streams, self.notifier)
        self.filters = FilterService(db)
        self.openid = OpenIdService(db, config.server_name)

    def _build_threepids(self) -> None:
        """Mail (when configured), address validation, the addresses of accounts."""
        config = self.config
        self.mailer = Mailer.from_config(config)
        self.validation = ThreepidValidation(
            self.db,
            self.mailer,
            self.ratelimit,
            server_name=config.server_name,
            public_baseurl=config.client_base_url,
            token_lifetime_ms=config.email_validation_token_lifetime,
        )
        self.pushers = PusherService(self.db, email_notifs=config.email_enable_notifs)
        self.threepids = ThreepidService(
            self.db,
            self.validation,
            self.pushers,
            changes_enabled=config.enable_3pid_changes,
            notify_new_users=config.email_enable_notifs and config.email_notif_for_new_users,
        )

    def _build_rooms(self) -> None:
        """Local rooms; joins through other servers first, which membership and room
        creation (invites of remote users) are given."""
        db, writer, cache, server_name = self.db, self.writer, self.event_cache, self.server_name
        self.joins = FederationJoins(
            db,
            writer,
            cache,
            self.remote_client,
            self.keyring,
            self.room_locks,
            self.signing_key,
            server_name,
        )
        self.push_rules = PushRuleService(db, self.streams, self.notifier)
        self.membership = MembershipService(
            db, writer, cache, self.joins, self.push_rules, server_name
        )
        self.creation = RoomCreator(
            db, writer, self.joins, server_name, self.config.default_room_version
        )
        self.send = SendService(db, writer)
        self.delayed_events = DelayedEvents(db, self.send, self.config.max_event_delay_duration)
        self.directory_rooms = RoomDirectory(
            db, self.replicas, writer, cache, self.remote_client, server_name
        )
        self.upgrade = RoomUpgrader(db, writer, cache, self.push_rules, server_name)
        self.hierarchy = HierarchyService(db, cache, self.remote_client, server_name)
        self.search = SearchService(db, cache)
        self.reports = ReportService(db, cache)
        self.deactivation = Deactivations(
            db, self.e2ee_device_lists, self.membership, self.token_cache
        )
        self.directory_users = UserDirectoryService(
            db, self.replicas, self.config.user_directory_search_all_users
        )

    def _build_ephemeral(self) -> None:
        """Typing, receipts, presence and to-device messages; our users' go out as EDUs
        (to-device messages for other servers are handed to the announcer directly)."""
        db, streams, notifier = self.db, self.streams, self.notifier
        self.typing = TypingService(db, notifier)
        self.receipts = ReceiptService(db, streams, notifier)
        self.presence = PresenceService(db, streams, notifier, enabled=self.config.presence_enabled)
        self.edu_announcer = EduAnnouncer(db, self.remote_sender, self.presence, self.server_name)
        self.to_device = ToDeviceService(
            db, streams, notifier, self.edu_announcer, self.server_name
        )

    def _build_inbound_federation(self) -> None:
        """What other servers send and ask us."""
        db, cache, server_name = self.db, self.event_cache, self.server_name
        self.edus = InboundEdus(
            db,
            self.server_acl,
            self.typing,
            self.receipts,
            self.presence,
            self.to_device,
            self.remote_device_lists,
            server_name,
        )
        self.inbound = FederationInbound(
            db,
            self.writer,
            cache,
            self.remote_client,
            self.keyring,
            self.server_acl,
            self.room_locks,
            self.edus,
        )
        self.resident = ResidentMembership(
            db,
            self.writer,
            cache,
            self.keyring,
            self.room_locks,
            self.remote_sender,
            self.signing_key,
            server_name,
        )
        self.room_servers = RoomServers(db, server_name, self.remote_sender)
        self.reads = FederationReads(db, cache, self.server_acl, self.room_servers, server_name)
        self.backfill = Backfiller(
            db,
            cache,
            self.remote_client,
            self.keyring,
            self.inbound,
            self.room_locks,
            server_name,
        )

    def _build_push_and_sync(self) -> None:
        config = self.config
        self.notifications = NotificationService(
            self.db,
            self.event_cache,
            self.push_rules,
            self.server_name,
            retention_days=config.push_retention_days,
            unread_retention_days=config.push_unread_retention_days,
        )
        self.push_gateway = PushGateway(
            self.db, self.event_cache, allowed_ranges=config.push_ip_range_whitelist
        )
        self.email_notifier = EmailNotifier(
            self.db,
            self.event_cache,
            self.mailer,
            enabled=config.email_enable_notifs,
            delay_ms=config.email_notif_delay_before_mail,
            app_name=config.email_app_name,
            client_base_url=config.email_client_base_url or config.email_riot_base_url,
            public_baseurl=config.client_base_url,
            secret=self.signing_key.seed,
        )
        self.sync = SyncService(
            self.db,
            self.event_cache,
            self.notifier,
            filters=self.filters,
            typing=self.typing,
            receipts=self.receipts,
            presence=self.presence,
            to_device=self.to_device,
            device_lists=self.e2ee_device_lists,
            keys=self.e2ee_keys,
            notifications=self.notifications,
            push_rules=self.push_rules,
        )
        self.sliding_sync_extensions = Extensions(
            to_device=self.to_device,
            device_lists=self.e2ee_device_lists,
            keys=self.e2ee_keys,
            receipts=self.receipts,
            typing=self.typing,
            push_rules=self.push_rules,
        )
        self.sliding_sync = SlidingSyncService(
            self.db,
            self.event_cache,
            self.notifier,
            sync=self.sync,
            notifications=self.notifications,
            extensions=self.sliding_sync_extensions,
        )

    def _build_media(self) -> None:
        """The media repository, fetching remote media over our federation client."""
        config = self.config
        self.media_files = MediaFiles(config.media_dir)
        self.media_remote = RemoteMedia(
            self.db,
            self.media_files,
            self.remote_client,
            max_size=config.media_max_upload_size,
            time_limit_s=config.media_remote_timeout_s,
        )
        self.media_repository = MediaRepository(
            self.db,
            self.media_files,
            self.media_remote,
            self.server_name,
            config.media_max_upload_size,
        )
        self.thumbnails = ThumbnailService(
            self.db, self.media_files, self.media_repository, self.media_remote, self.server_name
        )
        self.url_previews = UrlPreviewService(
            self.db,
            self.media_files,
            self.media_repository,
            enabled=config.media_url_preview_enabled,
            max_size=config.media_url_preview_max_size,
            timeout_s=config.media_url_preview_timeout_s,
            allowed_ranges=config.media_url_preview_ip_range_whitelist,
            url_blacklist=config.media_url_preview_url_blacklist,
        )

    def _build_reads(self) -> None:
        """Profiles (other servers' asked over federation) and room reads (history
        holes are backfilled)."""
        self.profile = ProfileService(
            self.db, self.server_name, self.remote_client, self.ratelimit, self.membership
        )
        self.rooms_state = RoomStateService(self.db, self.event_cache)
        self.messages = MessageService(self.db, self.replicas, self.event_cache, self.backfill)
        self.relations = RelationService(self.db, self.event_cache)
        self._build_sso()

    def _build_sso(self) -> None:
        """Single sign-on: after profiles, which it may update from the provider."""
        config = self.config
        self.sso = SsoService(
            self.db,
            config.server_name,
            config.client_base_url,
            oidc_providers(config),
            self.login,
            self.uia,
            self.devices,
            self.profile,
            client_whitelist=config.sso_client_whitelist,
            update_profile=config.sso_update_profile_information,
            reserved=lambda user_id: (
                self.appservices_registry.exclusive_user_owner(user_id) is not None
            ),
        )

    def _build_voip(self) -> None:
        """TURN credentials for calls (the rest of calls lives with rooms and accounts)."""
        config = self.config
        self.turn = TurnService(
            uris=config.turn_uris,
            shared_secret=config.turn_shared_secret,
            username=config.turn_username,
            password=config.turn_password,
            lifetime_ms=config.turn_user_lifetime,
            allow_guests=config.turn_allow_guests,
        )

    def _build_appservices_and_admin(self) -> None:
        self.appservices_auth = AppServiceAuth(
            self.db, self.server_name, self.appservices_registry, self.accounts, self.login
        )
        self.appservices_sender = AppServiceSender(
            self.db,
            self.event_cache,
            self.appservices_registry,
            typing=self.typing,
            presence=self.presence,
        )
        self.admin_users = AdminUserService(
            self.db,
            self.server_name,
            self.token_cache,
            self.accounts,
            self.devices,
            self.membership,
            self.deactivation,
            self.threepids,
        )
        self.admin_moderation = AdminModerationService(self.db, self.server_name, self.token_cache)
        self.abuse_reports = AdminReportService(self.db)
        self.admin_room_history = AdminRoomHistory(
            self.db, self.event_cache, self.membership, self.send
        )
        self.admin_media = AdminMediaService(self.db, self.media_files, self.server_name)
        self.admin_room_tools = AdminRoomTools(
            self.db, self.server_name, self.membership, self.send
        )
        self.admin_destinations = AdminDestinationService(
            self.db, self.server_name, self.remote_sender
        )
        self.shared_secret = SharedSecretRegistration(
            self.config.registration_shared_secret, self.accounts, self.login, self.admin_users
        )
        self.admin_rooms = AdminRoomService(
            self.db, self.server_name, self.event_cache, self.membership
        )
        self.server_notices = ServerNotices(
            self.db,
            self.server_name,
            server_notices_settings(self.config),
            self.accounts,
            self.admin_users,
            self.creation,
            self.membership,
            self.send,
            self.account_data,
        )

    def _subscribe(self) -> None:
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
        self.writer.add_before_commit(self.notifications.before_commit)
        self.writer.add_before_commit(self.room_servers.before_commit)
        self.writer.add_before_commit(self.delayed_events.before_commit)
        self.writer.add_before_commit(record_room_facts)
        self.writer.add_after_commit(lambda w: self.push_gateway.notify_users(w.notified_users))
        self.writer.add_after_commit(lambda w: self.email_notifier.notify_users(w.notified_users))
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
        await asyncio.to_thread(self.media_files.sweep_stale)

    async def close(self) -> None:
        """Release what the services hold; the database pool belongs to the caller."""
        await self.delayed_events.close()
        await self.admin_rooms.close()
        await self.admin_room_tools.close()
        await self.admin_room_history.close()
        await self.deactivation.close()
        await self.backfill.close()
        await self.remote_device_lists.close()
        await self.notifications.close()
        await self.validation.close()
        await self.push_gateway.close()
        await self.email_notifier.close()
        await self.appservices_sender.close()
        await self.remote_sender.close()
        await self.remote_client.close()
        await self.url_previews.close()
        await self.sso.close()
        await self.presence.stop()
        self.typing.close()
        await self.notifier.stop()
        await self.replicas.close()
        await self.streams.close()
