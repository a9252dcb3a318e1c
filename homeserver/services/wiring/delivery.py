"""Composition-root steps: what users read and receive: push, sync, media, profiles,
room reads, and single sign-on.

Each step sets the `Homeserver` fields it builds from fields earlier steps set;
the order is `build_homeserver`'s (`services/wiring/__init__.py`)."""

from __future__ import annotations

from homeserver.config.media import retention_lifetimes, upload_limits
from homeserver.config.oidc import providers as oidc_providers
from homeserver.services.accounts.profile import ProfileService
from homeserver.services.homeserver import Homeserver
from homeserver.services.media.remote import RemoteMedia
from homeserver.services.media.repository import UPLOAD_LIMIT_PAGE, MediaRepository
from homeserver.services.media.retention import MediaRetention
from homeserver.services.media.thumbnails import ThumbnailService
from homeserver.services.media.url_previews import UrlPreviewService
from homeserver.services.push.email_notifier import EmailNotifier
from homeserver.services.push.gateway import PushGateway
from homeserver.services.push.notifications import NotificationService
from homeserver.services.rooms.state import RoomStateService
from homeserver.services.sliding_sync.extensions import Extensions
from homeserver.services.sliding_sync.sliding_sync import SlidingSyncService
from homeserver.services.sso.sso import SsoService
from homeserver.services.sync.sync import SyncService
from homeserver.services.timeline.messages import MessageService
from homeserver.services.timeline.relations import RelationService
from homeserver.storage.media.files import MediaFiles


def build_push_and_sync(hs: Homeserver) -> None:
    config = hs.config
    hs.notifications = NotificationService(
        hs.db,
        hs.event_cache,
        hs.push_rules,
        hs.notifier,
        hs.server_name,
        retention_days=config.push_retention_days,
        unread_retention_days=config.push_unread_retention_days,
    )
    hs.push_gateway = PushGateway(
        hs.db, hs.event_cache, allowed_ranges=config.push_ip_range_whitelist
    )
    hs.email_notifier = EmailNotifier(
        hs.db,
        hs.event_cache,
        hs.mailer,
        enabled=config.email_enable_notifs,
        delay_ms=config.email_notif_delay_before_mail,
        app_name=config.email_app_name,
        client_base_url=config.email_client_base_url or config.email_riot_base_url,
        public_baseurl=config.client_base_url,
        secret=hs.signing_key.seed,
    )
    hs.sync = SyncService(
        hs.db,
        hs.event_cache,
        hs.notifier,
        filters=hs.filters,
        typing=hs.typing,
        receipts=hs.receipts,
        presence=hs.presence,
        to_device=hs.to_device,
        device_lists=hs.e2ee_device_lists,
        keys=hs.e2ee_keys,
        notifications=hs.notifications,
        push_rules=hs.push_rules,
    )
    hs.sliding_sync_extensions = Extensions(
        to_device=hs.to_device,
        device_lists=hs.e2ee_device_lists,
        keys=hs.e2ee_keys,
        receipts=hs.receipts,
        typing=hs.typing,
        push_rules=hs.push_rules,
    )
    hs.sliding_sync = SlidingSyncService(
        hs.db,
        hs.event_cache,
        hs.notifier,
        sync=hs.sync,
        notifications=hs.notifications,
        extensions=hs.sliding_sync_extensions,
    )


def build_media(hs: Homeserver) -> None:
    """The media repository, fetching remote media over our federation client."""
    config = hs.config
    hs.media_files = MediaFiles(config.media_dir)
    hs.media_remote = RemoteMedia(
        hs.db,
        hs.media_files,
        hs.remote_client,
        max_size=config.media_max_upload_size,
        time_limit_s=config.media_remote_timeout_s,
        authenticated_media=config.enable_authenticated_media,
    )
    local_lifetime, remote_lifetime = retention_lifetimes(config.media_retention)
    hs.retention = MediaRetention(
        hs.db,
        hs.media_files,
        hs.server_name,
        local_lifetime_ms=local_lifetime,
        remote_lifetime_ms=remote_lifetime,
    )
    hs.media_repository = MediaRepository(
        hs.db,
        hs.replicas,
        hs.media_files,
        hs.media_remote,
        hs.server_name,
        config.media_max_upload_size,
        authenticated_media=config.enable_authenticated_media,
        upload_limits=upload_limits(config.media_upload_limits),
        retention=hs.retention,
        limit_info_uri=config.client_base_url + UPLOAD_LIMIT_PAGE.lstrip("/"),
    )
    hs.thumbnails = ThumbnailService(
        hs.db, hs.replicas, hs.media_files, hs.media_repository, hs.media_remote, hs.server_name
    )
    hs.url_previews = UrlPreviewService(
        hs.db,
        hs.media_files,
        hs.media_repository,
        enabled=config.media_url_preview_enabled,
        max_size=config.media_url_preview_max_size,
        timeout_s=config.media_url_preview_timeout_s,
        allowed_ranges=config.media_url_preview_ip_range_whitelist,
        url_blacklist=config.media_url_preview_url_blacklist,
    )


def build_reads(hs: Homeserver) -> None:
    """Profiles (other servers' asked over federation) and room reads (history
    holes are backfilled)."""
    hs.profile = ProfileService(
        hs.db, hs.server_name, hs.remote_client, hs.ratelimit, hs.membership
    )
    hs.rooms_state = RoomStateService(hs.db, hs.replicas, hs.event_cache)
    hs.messages = MessageService(hs.db, hs.replicas, hs.event_cache, hs.backfill)
    hs.relations = RelationService(hs.db, hs.event_cache)
    build_sso(hs)


def build_sso(hs: Homeserver) -> None:
    """Single sign-on: after profiles, which it may update from the provider."""
    config = hs.config
    hs.sso = SsoService(
        hs.db,
        config.server_name,
        config.client_base_url,
        oidc_providers(config),
        hs.login,
        hs.uia,
        hs.devices,
        hs.profile,
        client_whitelist=config.sso_client_whitelist,
        update_profile=config.sso_update_profile_information,
        reserved=lambda user_id: hs.appservices_registry.exclusive_user_owner(user_id) is not None,
    )
