"""Composition-root steps: calls, application services and the admin API, built last
from everything else.

Each step sets the `Homeserver` fields it builds from fields earlier steps set;
the order is `build_homeserver`'s (`services/wiring/__init__.py`)."""

from __future__ import annotations

from homeserver.config.admin import server_notices as server_notices_settings
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
from homeserver.services.appservices.sender import AppServiceSender
from homeserver.services.homeserver import Homeserver
from homeserver.services.voip.turn import TurnService


def build_voip(hs: Homeserver) -> None:
    """TURN credentials for calls (the rest of calls lives with rooms and accounts)."""
    config = hs.config
    hs.turn = TurnService(
        uris=config.turn_uris,
        shared_secret=config.turn_shared_secret,
        username=config.turn_username,
        password=config.turn_password,
        lifetime_ms=config.turn_user_lifetime,
        allow_guests=config.turn_allow_guests,
    )


def build_appservices_and_admin(hs: Homeserver) -> None:
    hs.appservices_auth = AppServiceAuth(
        hs.db, hs.server_name, hs.appservices_registry, hs.accounts, hs.login
    )
    hs.appservices_sender = AppServiceSender(
        hs.db,
        hs.event_cache,
        hs.appservices_registry,
        typing=hs.typing,
        presence=hs.presence,
    )
    hs.admin_users = AdminUserService(
        hs.db,
        hs.server_name,
        hs.token_cache,
        hs.accounts,
        hs.devices,
        hs.membership,
        hs.deactivation,
        hs.threepids,
    )
    hs.admin_moderation = AdminModerationService(hs.db, hs.server_name, hs.token_cache)
    hs.abuse_reports = AdminReportService(hs.db)
    hs.admin_tasks = AdminTasks(hs.db)
    hs.admin_room_history = AdminRoomHistory(
        hs.db, hs.event_cache, hs.membership, hs.send, hs.admin_tasks
    )
    hs.admin_media = AdminMediaService(hs.db, hs.media_files, hs.server_name)
    hs.admin_room_tools = AdminRoomTools(
        hs.db, hs.server_name, hs.membership, hs.send, hs.admin_tasks
    )
    hs.admin_destinations = AdminDestinationService(hs.db, hs.server_name, hs.remote_sender)
    hs.shared_secret = SharedSecretRegistration(
        hs.config.registration_shared_secret, hs.accounts, hs.login, hs.admin_users
    )
    hs.admin_rooms = AdminRoomService(
        hs.db, hs.server_name, hs.event_cache, hs.membership, hs.admin_tasks
    )
    hs.server_notices = ServerNotices(
        hs.db,
        hs.server_name,
        server_notices_settings(hs.config),
        hs.accounts,
        hs.admin_users,
        hs.creation,
        hs.membership,
        hs.send,
        hs.account_data,
    )
