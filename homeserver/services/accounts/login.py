"""Logging in: who an identifier names, password and login-token checks, and the
session (device, access token, refresh token) a successful login starts."""

from __future__ import annotations

from typing import Any

from homeserver.services.accounts.accounts import storable
from homeserver.services.accounts.auth import LOCKED, hash_token, new_token
from homeserver.services.accounts.devices import MAX_DISPLAY_NAME_LENGTH, new_device_id
from homeserver.services.accounts.passwords import Passwords
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, forbidden
from homeserver.services.threepids.addresses import EMAIL, canonical_email
from homeserver.storage.accounts import accounts, devices, tokens
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import cross_signing
from homeserver.storage.push import pushers
from homeserver.storage.threepids import threepids

LOGIN_PASSWORD = "m.login.password"
LOGIN_TOKEN = "m.login.token"
LOGIN_TOKEN_LIFETIME_MS = 2 * 60 * 1000
MAX_DEVICE_ID_LENGTH = 255
CROSS_SIGNING_KEY_TYPES = ("master", "self_signing", "user_signing")


# Who a third-party id that names no account "is": nobody can have this user id.
NO_SUCH_USER = "@:"


def email_of_identifier(body: dict[str, Any]) -> str | None:
    """The email address an `m.id.thirdparty` identifier (or the legacy top-level
    `medium`/`address`) names, canonical; None for other identifiers."""
    identifier = body.get("identifier")
    if identifier is None and body.get("medium") is not None:
        identifier = {**body, "type": "m.id.thirdparty"}
    if not isinstance(identifier, dict) or identifier.get("type") != "m.id.thirdparty":
        return None
    medium = identifier.get("medium")
    if medium != EMAIL:
        if not isinstance(medium, str):
            raise bad_json("identifier.medium must be a string")
        raise forbidden("Only email addresses are associated with accounts on this server")
    return canonical_email(identifier.get("address"), "identifier.address")


def user_id_from_identifier(body: dict[str, Any], server_name: str) -> str:
    """The user named by a login or auth body: its `identifier`, or the legacy
    top-level `user`. Third-party ids are looked up (LoginService.user_id_for)."""
    identifier = body.get("identifier")
    if identifier is None:
        if "user" in body:
            identifier = {"type": "m.id.user", "user": body["user"]}
        elif "medium" in body or "address" in body:
            identifier = {"type": "m.id.thirdparty"}
        else:
            raise ServiceError(400, "M_MISSING_PARAM", "Missing identifier")
    if not isinstance(identifier, dict):
        raise bad_json("identifier must be an object")
    kind = identifier.get("type")
    if kind == "m.id.user":
        user = identifier.get("user")
        if not isinstance(user, str) or not user:
            raise bad_json("identifier.user must be a non-empty string")
        return qualify(storable(user, "identifier.user"), server_name)
    if kind in ("m.id.thirdparty", "m.id.phone"):
        raise forbidden("No third-party identifiers are associated with accounts on this server")
    raise ServiceError(400, "M_UNKNOWN", "Unknown identifier type")


def qualify(user: str, server_name: str) -> str:
    """A full user id from a localpart or a user id; local ids are all lowercase."""
    if user.startswith("@"):
        localpart, _, server = user[1:].partition(":")
        if server != server_name:
            return user
    else:
        localpart = user
    return f"@{localpart.lower()}:{server_name}"


def validate_device_id(device_id: Any) -> str | None:
    if device_id is None:
        return None
    if not isinstance(device_id, str) or not device_id:
        raise bad_json("device_id must be a non-empty string")
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ServiceError(400, "M_INVALID_PARAM", "device_id is too long")
    return storable(device_id, "device_id")


def validate_display_name(display_name: Any) -> str | None:
    if display_name is None:
        return None
    if not isinstance(display_name, str):
        raise bad_json("initial_device_display_name must be a string")
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise ServiceError(400, "M_INVALID_PARAM", "initial_device_display_name is too long")
    return storable(display_name, "initial_device_display_name")


async def _names_cross_signing_key(conn: Connection, user_id: str, device_id: str) -> bool:
    """Signatures name devices and cross-signing keys alike (`ed25519:<id>`)."""
    rows = await cross_signing.get_keys(conn, [user_id], list(CROSS_SIGNING_KEY_TYPES))
    return any(device_id in (r.key_id, r.key_id.removeprefix("ed25519:")) for r in rows)


class LoginService:
    """Logging in and the sessions (device, access and refresh tokens) it starts."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        access_token_lifetime_ms: int,
        passwords: Passwords,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.access_token_lifetime_ms = access_token_lifetime_ms
        self.passwords = passwords

    async def user_id_for(self, body: dict[str, Any]) -> str:
        """The user a login or auth body names, email addresses included. An address
        of nobody gives a user id nobody has: the password check then fails as for a
        wrong password, in the same time, so a login tells nobody which addresses exist."""
        address = email_of_identifier(body)
        if address is None:
            return user_id_from_identifier(body, self.server_name)
        async with self.db.pool.connection() as conn:
            owner = await threepids.user_of(conn, EMAIL, address)
        return owner or NO_SUCH_USER

    async def check_user_password(self, user_id: str, password: Any) -> None:
        """Pass, or 403: M_FORBIDDEN for a wrong password or an unknown user (which take
        the same time), M_USER_DEACTIVATED only once the password was right."""
        if not isinstance(password, str):
            raise bad_json("password must be a string")
        async with self.db.pool.connection() as conn:
            info = await accounts.get_login_info(conn, user_id)
        password_hash, deactivated = info if info is not None else (None, False)
        if not await self.passwords.check(password_hash, password):
            raise forbidden("Invalid username or password")
        if deactivated:
            raise ServiceError(403, "M_USER_DEACTIVATED", "This account has been deactivated")

    async def start_session(
        self,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        *,
        refreshable: bool,
        auth_provider: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create (or take over) a device and issue its tokens; the login response body.
        Reusing a device id replaces the tokens that device had; a device id may not be
        one of the user's cross-signing keys (the spec forbids it). `auth_provider`:
        the single sign-on (provider, session) the device comes from, which may end it."""
        requested = device_id
        device_id = device_id or new_device_id()
        access_token = new_token("mat")
        now = now_ms()
        lifetime = self.access_token_lifetime_ms
        body: dict[str, Any] = {
            "user_id": user_id,
            "device_id": device_id,
            "access_token": access_token,
            "home_server": self.server_name,
        }
        async with self.db.pool.connection() as conn, conn.transaction():
            if requested is not None and await _names_cross_signing_key(conn, user_id, requested):
                raise forbidden("The device id is one of your cross-signing keys")
            if await devices.upsert_device(conn, user_id, device_id, display_name, now):
                await tokens.delete_device_tokens(conn, user_id, [device_id])
            await tokens.set_device_auth_provider(conn, user_id, device_id, auth_provider)
            refresh_id = None
            expires_ts = None
            if refreshable:
                refresh_token = new_token("mar")
                refresh_id = await tokens.insert_refresh_token(
                    conn, hash_token(refresh_token), user_id, device_id, now_ms=now
                )
                expires_ts = now + lifetime
                body["refresh_token"] = refresh_token
                body["expires_in_ms"] = lifetime
            await tokens.insert_access_token(
                conn,
                hash_token(access_token),
                user_id,
                device_id,
                now_ms=now,
                expires_ts=expires_ts,
                refresh_token_id=refresh_id,
            )
        return body

    async def user_from_login_token(self, token: Any) -> tokens.LoginTokenRow:
        if not isinstance(token, str) or not token:
            raise bad_json("token must be a non-empty string")
        async with self.db.pool.connection() as conn:
            row = await tokens.consume_login_token(conn, hash_token(token), now_ms())
            info = await accounts.get_login_info(conn, row.user_id) if row else None
        if row is None or info is None:
            raise forbidden("Invalid or expired login token")
        if info[1]:
            raise ServiceError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        return row

    async def login(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /login: check the credentials, then start a session."""
        kind = body.get("type")
        auth_provider = None
        if kind == LOGIN_PASSWORD:
            user_id = await self.user_id_for(body)
            await self.check_user_password(user_id, body.get("password"))
        elif kind == LOGIN_TOKEN:
            row = await self.user_from_login_token(body.get("token"))
            user_id, auth_provider = row.user_id, row.auth_provider
        elif isinstance(kind, str):
            raise ServiceError(400, "M_UNKNOWN", f"Unsupported login type {kind}")
        else:
            raise bad_json("type must be a string")
        async with self.db.pool.connection() as conn:
            if await accounts.is_locked(conn, user_id):
                raise ServiceError(401, LOCKED, "This account has been locked", soft_logout=True)
        display_name = validate_display_name(body.get("initial_device_display_name"))
        refreshable = body.get("refresh_token", False)
        if not isinstance(refreshable, bool):
            raise bad_json("refresh_token must be a boolean")
        return await self.start_session(
            user_id,
            validate_device_id(body.get("device_id")),
            display_name,
            refreshable=refreshable,
            auth_provider=auth_provider,
        )

    async def create_login_token(
        self, user_id: str, auth_provider: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """A short-lived single-use token that logs `user_id` in on another device (from
        single sign-on: with the provider session the device will belong to)."""
        token = new_token("mal")
        async with self.db.pool.connection() as conn:
            await tokens.insert_login_token(
                conn, hash_token(token), user_id, now_ms() + LOGIN_TOKEN_LIFETIME_MS, auth_provider
            )
        return {"login_token": token, "expires_in_ms": LOGIN_TOKEN_LIFETIME_MS}

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Exchange a refresh token for a new access token and refresh token."""
        new_access = new_token("mat")
        new_refresh = new_token("mar")
        now = now_ms()
        lifetime = self.access_token_lifetime_ms
        async with self.db.pool.connection() as conn, conn.transaction():
            old = await tokens.lookup_refresh_token(conn, hash_token(refresh_token))
            if old is None or (old.expires_ts is not None and old.expires_ts <= now):
                raise ServiceError(401, "M_UNKNOWN_TOKEN", "Unknown or already used refresh token")
            new_id = await tokens.insert_refresh_token(
                conn, hash_token(new_refresh), old.user_id, old.device_id, now_ms=now
            )
            replaced = await tokens.replace_refresh_token(conn, old.token_id, new_id)
            access_id = await tokens.insert_access_token(
                conn,
                hash_token(new_access),
                old.user_id,
                old.device_id,
                now_ms=now,
                expires_ts=now + lifetime,
                refresh_token_id=new_id,
            )
            # The session goes on under the new token, and so do the pushers it set.
            await pushers.move_to_token(conn, replaced, access_id)
        return {"access_token": new_access, "refresh_token": new_refresh, "expires_in_ms": lifetime}
