"""Server admins managing accounts: listing and inspecting them, creating accounts,
changing profiles, passwords and the admin flag, logging devices out, deactivating.

Every change goes through the same paths the account's owner would use (password
hashing, device deletion with its device-list update, deactivation), so an account
an admin changed is indistinguishable from one its owner changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federation.identifiers import server_name_of
from homeserver.services.accounts.accounts import AccountService, storable
from homeserver.services.accounts.auth import Requester, TokenCache
from homeserver.services.accounts.deactivation import Deactivations
from homeserver.services.accounts.devices import DeviceService
from homeserver.services.accounts.profile import FIELDS, MAX_LENGTHS
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, invalid_param, not_found
from homeserver.services.rooms.membership import MembershipService
from homeserver.services.threepids.threepids import ThreepidService, admin_threepids
from homeserver.storage.accounts import devices as device_store
from homeserver.storage.accounts import profiles
from homeserver.storage.accounts.profiles import ProfileField
from homeserver.storage.admin import moderation
from homeserver.storage.admin import users as admin_users
from homeserver.storage.admin.users import AdminUserRow, UserFilter
from homeserver.storage.core.pool import Database
from homeserver.storage.rooms import memberships
from homeserver.storage.sso import sso as sso_store

ORDER_BY = frozenset(admin_users.ORDER_COLUMNS)
MAX_PAGE = 1000


def local_user_id(user_id: str, server_name: str) -> str:
    """`user_id` if it names an account of this server: admins manage only those."""
    server = server_name_of(user_id, "@")
    if server is None:
        raise invalid_param(f"{user_id!r} is not a user id")
    if server != server_name:
        raise invalid_param("Only local users can be managed here")
    return user_id


def render_user(
    row: AdminUserRow,
    threepids: list[dict[str, Any]] | None = None,
    external_ids: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """An account as admin tools show it; fields for features this server does not
    have (consent, user types) hold their empty value."""
    return {
        "name": row.user_id,
        "displayname": row.displayname,
        "avatar_url": row.avatar_url,
        "is_guest": row.is_guest,
        "admin": row.is_admin,
        "deactivated": row.deactivated,
        "erased": row.erased,
        "shadow_banned": row.shadow_banned,
        "locked": row.locked,
        "suspended": row.suspended,
        "approved": True,
        "user_type": None,
        "creation_ts": row.created_ts,
        "last_seen_ts": row.last_seen_ts,
        "appservice_id": None,
        "consent_server_notice_sent": None,
        "consent_version": None,
        "consent_ts": None,
        "threepids": threepids or [],
        "external_ids": [
            {"auth_provider": provider, "external_id": external_id}
            for provider, external_id in external_ids or []
        ],
    }


@dataclass(frozen=True, slots=True)
class UserListing:
    """A page of the account listing: the filter's conditions (None: no condition),
    then the order and the page."""

    name: str | None = None  # substring of the localpart or the display name
    user_id: str | None = None  # substring of the full user id
    include_guests: bool = True
    include_deactivated: bool = False
    admins: bool | None = None
    deactivated: bool | None = None  # v3: only deactivated (True) or only active (False)
    order_by: str = "name"
    ascending: bool = True
    offset: int = 0
    limit: int = 100


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise invalid_param(f"{key} must be a {kind.__name__}")
    return value


def _profile_value(field: ProfileField, value: str) -> str | None:
    storable(value, field)
    if len(value) > MAX_LENGTHS[field]:
        raise invalid_param(f"{field} is longer than {MAX_LENGTHS[field]} characters")
    return value or None


def _external_ids(body: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The SSO links `body` sets (replacing all the account has), without repeats."""
    value = body.get("external_ids")
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_param("external_ids must be a list")
    links: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise invalid_param("Each external id must be an object")
        provider, external_id = item.get("auth_provider"), item.get("external_id")
        if not isinstance(provider, str) or not isinstance(external_id, str):
            raise invalid_param("Each external id needs auth_provider and external_id strings")
        if (provider, external_id) not in links:
            links.append((provider, external_id))
    return links


def _link_taken() -> ServiceError:
    return ServiceError(409, "M_UNKNOWN", "External id is already in use")


def _check_unsupported(body: dict[str, Any], existing: AdminUserRow | None) -> None:
    """Refuse what we cannot store rather than pretend it was saved. Admin tools send
    the whole account back on save (Ketesa after setting the flags through their own
    endpoints), so a flag that matches the account is accepted as it is."""
    if body.get("user_type") is not None:
        raise invalid_param("This server has no user types")
    current = {
        "suspended": existing.suspended if existing else False,
        "shadow_banned": existing.shadow_banned if existing else False,
    }
    for key, value in current.items():
        if body.get(key) not in (None, value):
            raise invalid_param(f"{key} is set through its own endpoint")


def _device(user_id: str, row: device_store.DeviceRow) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "display_name": row.display_name,
        "last_seen_ip": row.last_seen_ip,
        "last_seen_ts": row.last_seen_ts,
        "last_seen_user_agent": row.last_seen_user_agent,
        "user_id": user_id,
    }


class AdminUserService:
    """What server admins do to accounts, through the services their owners use."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        token_cache: TokenCache,
        accounts: AccountService,
        devices: DeviceService,
        membership: MembershipService,
        deactivations: Deactivations,
        threepids: ThreepidService,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.token_cache = token_cache
        self.accounts = accounts
        self.devices = devices
        self.membership = membership
        self.deactivations = deactivations
        self.threepids = threepids

    async def list_users(self, listing: UserListing) -> dict[str, Any]:
        """A page of accounts, with the offset of the next page while there is one."""
        if listing.order_by not in ORDER_BY:
            raise invalid_param(f"Cannot order users by {listing.order_by!r}")
        limit = min(listing.limit, MAX_PAGE)
        async with self.db.pool.connection() as conn:
            rows, total = await admin_users.list_users(
                conn,
                UserFilter(
                    listing.name,
                    listing.user_id,
                    listing.include_guests,
                    listing.include_deactivated,
                    listing.admins,
                    listing.deactivated,
                ),
                order_by=listing.order_by,
                ascending=listing.ascending,
                offset=listing.offset,
                limit=limit,
            )
        out: dict[str, Any] = {"users": [render_user(row) for row in rows], "total": total}
        if listing.offset + len(rows) < total:
            out["next_token"] = str(listing.offset + len(rows))
        return out

    async def search_users(self, user_id: str, term: str) -> list[dict[str, Any]]:
        """Synapse's legacy `search_users`: accounts whose user id contains `term` (at
        most MAX_PAGE), deactivated ones too. Unlike Synapse, no password hashes."""
        local_user_id(user_id, self.server_name)
        async with self.db.pool.connection() as conn:
            rows, _ = await admin_users.list_users(
                conn,
                UserFilter(user_id=term, include_deactivated=True),
                order_by="name",
                ascending=True,
                offset=0,
                limit=MAX_PAGE,
            )
        return [
            {
                "name": row.user_id,
                "is_guest": row.is_guest,
                "admin": row.is_admin,
                "user_type": None,
            }
            for row in rows
        ]

    async def _row(self, user_id: str) -> AdminUserRow:
        async with self.db.pool.connection() as conn:
            row = await admin_users.get_user(conn, local_user_id(user_id, self.server_name))
        if row is None:
            raise not_found("User not found")
        return row

    async def get_user(self, user_id: str) -> dict[str, Any]:
        row = await self._row(user_id)
        async with self.db.pool.connection() as conn:
            links = await sso_store.external_ids_of_user(conn, row.user_id)
        return render_user(row, await self.threepids.list(row.user_id), links)

    async def user_for_external_id(self, auth_provider: str, external_id: str) -> str:
        """The account an SSO provider's subject signs in to."""
        async with self.db.pool.connection() as conn:
            user_id = await sso_store.user_for_external_id(conn, auth_provider, external_id)
        if user_id is None:
            raise not_found("User not found")
        return user_id

    async def _check_links_free(self, user_id: str, links: list[tuple[str, str]]) -> None:
        async with self.db.pool.connection() as conn:
            for provider, external_id in links:
                owner = await sso_store.user_for_external_id(conn, provider, external_id)
                if owner is not None and owner != user_id:
                    raise _link_taken()

    async def _set_links(self, user_id: str, links: list[tuple[str, str]]) -> None:
        async with self.db.pool.connection() as conn, conn.transaction():
            if not await sso_store.replace_external_ids(conn, user_id, links):
                raise _link_taken()

    async def upsert_user(
        self, requester: Requester, user_id: str, body: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        """Create the account or change it as `body` says; (created, the account now)."""
        local_user_id(user_id, self.server_name)
        password = _optional(body, "password", str)
        logout_devices = body.get("logout_devices", True)
        if not isinstance(logout_devices, bool):
            raise invalid_param("logout_devices must be a boolean")
        admin = _optional(body, "admin", bool)
        locked = _optional(body, "locked", bool)
        deactivated = _optional(body, "deactivated", bool)
        raw_threepids = body.get("threepids")
        threepids = admin_threepids(raw_threepids) if raw_threepids is not None else None
        links = _external_ids(body)
        if links:
            await self._check_links_free(user_id, links)
        profile = {
            field: _profile_value(field, value)
            for field in FIELDS
            if (value := _optional(body, field, str)) is not None
        }
        async with self.db.pool.connection() as conn:
            existing = await admin_users.get_user(conn, user_id)
        _check_unsupported(body, existing)
        if existing is None:
            await self.accounts.register_user(user_id, password, admin=bool(admin))
        else:
            await self._modify(requester, existing, password, logout_devices, admin, deactivated)
        if profile:
            await self._set_profile(user_id, profile)
        if threepids is not None:
            await self.threepids.set_by_admin(user_id, threepids)
        if links is not None:
            await self._set_links(user_id, links)
        if existing is None and deactivated:
            await self.deactivate(user_id, erase=False)
        if locked is not None:
            async with self.db.pool.connection() as conn:
                await moderation.set_flag(conn, user_id, "locked", locked)
            self.token_cache.forget(user_id)
        return existing is None, await self.get_user(user_id)

    async def _modify(
        self,
        requester: Requester,
        existing: AdminUserRow,
        password: str | None,
        logout_devices: bool,
        admin: bool | None,
        deactivated: bool | None,
    ) -> None:
        user_id = existing.user_id
        if admin is not None and admin != existing.is_admin:
            if not admin and user_id == requester.user_id:
                raise invalid_param("You may not demote yourself")
            async with self.db.pool.connection() as conn:
                await admin_users.set_admin(conn, user_id, admin)
            # Requesters carry the flag: drop this process's cached ones at once.
            self.token_cache.forget(user_id)
        if deactivated is False and existing.deactivated:
            if password is None:
                raise ServiceError(
                    400, "M_MISSING_PARAM", "A password is needed to reactivate an account"
                )
            async with self.db.pool.connection() as conn:
                await admin_users.reactivate(conn, user_id)
        if password is not None:
            await self.reset_password(user_id, password, logout_devices=logout_devices)
        if deactivated and not existing.deactivated:
            await self.deactivate(user_id, erase=False)

    async def set_display_name(self, user_id: str, name: str) -> None:
        await self._set_profile(user_id, {"displayname": _profile_value("displayname", name)})

    async def set_profile(
        self, user_id: str, displayname: str | None, avatar_url: str | None
    ) -> None:
        """Set the given fields of a profile (None: leave that field alone)."""
        changes: dict[ProfileField, str | None] = {}
        if displayname is not None:
            changes["displayname"] = _profile_value("displayname", displayname)
        if avatar_url is not None:
            changes["avatar_url"] = _profile_value("avatar_url", avatar_url)
        if changes:
            await self._set_profile(user_id, changes)

    async def _set_profile(self, user_id: str, changes: dict[ProfileField, str | None]) -> None:
        """Store the new display name / avatar, and announce them in the user's rooms."""
        current: dict[str, str | None] = {}
        async with self.db.pool.connection() as conn, conn.transaction():
            for field in FIELDS:
                if field in changes:
                    name, avatar = await profiles.set_profile_field(
                        conn, user_id, field, changes[field]
                    )
                    current = {"displayname": name, "avatar_url": avatar}
        await self.membership.announce_profile(
            user_id, {key: value for key, value in current.items() if value}
        )

    async def reset_password(
        self, user_id: str, new_password: str, *, logout_devices: bool
    ) -> None:
        """Set a new password; unless told not to, every device of the user is logged out."""
        await self._row(user_id)
        await self.accounts.change_password(user_id, new_password)
        if logout_devices:
            await self.devices.delete_all_devices(user_id)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """The same deactivation the user could do themself: no password, devices, keys
        or tokens left."""
        await self._row(user_id)
        await self.deactivations.deactivate(user_id, erase=erase)

    async def joined_rooms(self, user_id: str) -> dict[str, Any]:
        await self._row(user_id)
        async with self.db.pool.connection() as conn:
            rows = await memberships.rooms_of_user(conn, user_id)
        room_ids = sorted(row.room_id for row in rows)
        return {"joined_rooms": room_ids, "total": len(room_ids)}

    async def list_devices(self, user_id: str) -> dict[str, Any]:
        await self._row(user_id)
        async with self.db.pool.connection() as conn:
            rows = await device_store.list_devices(conn, user_id)
        return {"devices": [_device(user_id, row) for row in rows], "total": len(rows)}

    async def get_device(self, user_id: str, device_id: str) -> dict[str, Any]:
        await self._row(user_id)
        async with self.db.pool.connection() as conn:
            row = await device_store.get_device(conn, user_id, device_id)
        if row is None:
            raise not_found("Device not found")
        return _device(user_id, row)

    async def delete_device(self, user_id: str, device_id: str) -> None:
        """Log one device out (deleting an unknown device succeeds, as in Synapse)."""
        await self._row(user_id)
        await self.devices.delete_devices(user_id, [device_id])

    async def create_device(self, user_id: str, device_id: Any) -> None:
        """A device with no token yet (nothing when it exists already), as Synapse does."""
        await self._row(user_id)
        if not isinstance(device_id, str) or not device_id:
            raise invalid_param("device_id must be a non-empty string")
        async with self.db.pool.connection() as conn:
            await device_store.upsert_device(conn, user_id, device_id, None, now_ms())

    async def rename_device(self, user_id: str, device_id: str, display_name: Any) -> None:
        await self._row(user_id)
        if display_name is None:
            return
        if not isinstance(display_name, str):
            raise invalid_param("display_name must be a string")
        async with self.db.pool.connection() as conn:
            if not await device_store.set_display_name(conn, user_id, device_id, display_name):
                raise not_found("Device not found")

    async def delete_devices(self, user_id: str, device_ids: Any) -> None:
        await self._row(user_id)
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise invalid_param("devices must be a list of device ids")
        await self.devices.delete_devices(user_id, device_ids)

    async def whois(
        self, requester: Requester, user_id: str, *, by_device: bool = True
    ) -> dict[str, Any]:
        """Each device's last connection; admins may ask about anyone, users about
        themselves. `by_device=False` gives Synapse's admin shape, which admin tools
        (Ketesa's connections tab) read: every connection under one device keyed ""."""
        if not requester.is_admin and requester.user_id != user_id:
            raise ServiceError(403, "M_FORBIDDEN", "You are not a server admin")
        await self._row(user_id)
        async with self.db.pool.connection() as conn:
            rows = await device_store.list_devices(conn, user_id)
        seen = sorted(
            (row for row in rows if row.last_seen_ts is not None),
            key=lambda row: row.last_seen_ts or 0,
            reverse=True,
        )
        connections = {
            row.device_id: {
                "ip": row.last_seen_ip,
                "last_seen": row.last_seen_ts,
                "user_agent": row.last_seen_user_agent,
            }
            for row in seen
        }
        if not by_device:
            merged = list(connections.values())
            return {"user_id": user_id, "devices": {"": {"sessions": [{"connections": merged}]}}}
        return {
            "user_id": user_id,
            "devices": {
                row.device_id: {
                    "sessions": [
                        {"connections": [connections[row.device_id]]}
                        if row.device_id in connections
                        else {"connections": []}
                    ]
                }
                for row in rows
            },
        }
