"""Registration of new accounts through the client API, and the registration
tokens that admins hand out when registration needs one."""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from homeserver.services.accounts.accounts import (
    AccountError,
    AccountService,
    is_valid_localpart,
    storable,
)
from homeserver.services.accounts.login import (
    LoginService,
    validate_device_id,
    validate_display_name,
)
from homeserver.services.accounts.uia import DUMMY, REGISTRATION_TOKEN, Challenge, UiaService
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, forbidden, not_found
from homeserver.storage.accounts import accounts, registration_tokens
from homeserver.storage.core.pool import Database

MAX_TOKEN_LENGTH = 64
DEFAULT_TOKEN_LENGTH = 16
_TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
_TOKEN = re.compile(r"[A-Za-z0-9._~\-]{1,64}")
_GENERATED_ALPHABET = string.ascii_lowercase + string.digits


def user_id_for(username: str, server_name: str) -> str:
    """The user id a requested username gives, or M_INVALID_USERNAME."""
    localpart = username.lower()
    if not is_valid_localpart(localpart):
        raise AccountError(
            "M_INVALID_USERNAME", "User ids may contain only lowercase letters, digits and ._=-/+"
        )
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode()) > 255:
        raise AccountError("M_INVALID_USERNAME", "User id is too long")
    return user_id


def _optional(body: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise bad_json(f"{key} must be a {kind.__name__}")
    return value


def render_token(row: registration_tokens.RegistrationTokenRow) -> dict[str, Any]:
    return {
        "token": row.token,
        "uses_allowed": row.uses_allowed,
        "pending": row.pending,
        "completed": row.completed,
        "expiry_time": row.expiry_time,
    }


def _check_uses(uses_allowed: Any) -> int | None:
    if uses_allowed is None:
        return None
    if isinstance(uses_allowed, bool) or not isinstance(uses_allowed, int) or uses_allowed < 0:
        raise ServiceError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer")
    return uses_allowed


def _check_expiry(expiry_time: Any) -> int | None:
    if expiry_time is None:
        return None
    if isinstance(expiry_time, bool) or not isinstance(expiry_time, int):
        raise ServiceError(400, "M_INVALID_PARAM", "expiry_time must be an integer")
    if expiry_time < now_ms():
        raise ServiceError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
    return expiry_time


class RegistrationService:
    """New accounts over the client API."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        *,
        open_registration: bool,
        requires_token: bool,
        accounts: AccountService,
        login: LoginService,
        uia: UiaService,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.open_registration = open_registration
        self.requires_token = requires_token
        self.accounts = accounts
        self.login = login
        self.uia = uia

    def flows(self) -> list[list[str]]:
        """The registration flows on offer; 403 when nobody may register over the API."""
        if self.requires_token:
            return [[REGISTRATION_TOKEN]]
        if self.open_registration:
            return [[DUMMY]]
        raise forbidden("Registration is disabled on this server")

    async def check_available(self, username: str) -> str:
        user_id = user_id_for(username, self.server_name)
        async with self.db.pool.connection() as conn:
            if await accounts.user_exists(conn, user_id):
                raise AccountError("M_USER_IN_USE", "This user id is already taken")
        return user_id

    async def register(self, body: dict[str, Any], kind: str, request_key: str) -> dict[str, Any]:
        """POST /register: validate, run user-interactive auth, create the account and
        (unless inhibit_login) log it in."""
        if kind == "guest":
            raise ServiceError(
                403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled on this server"
            )
        if kind != "user":
            raise ServiceError(400, "M_INVALID_PARAM", "kind must be user or guest")
        challenge = Challenge(flows=self.flows(), request_key=request_key)
        username = _optional(body, "username", str)
        password = _optional(body, "password", str)
        display_name = validate_display_name(body.get("initial_device_display_name"))
        inhibit_login = _optional(body, "inhibit_login", bool, False)
        refreshable = _optional(body, "refresh_token", bool, False)
        device_id = validate_device_id(body.get("device_id"))
        if username is not None:
            await self.check_available(username)
        data = await self.uia.authenticate(challenge, body.get("auth"))
        token = data.get("registration_token")
        try:
            user_id = await self._create_account(username, password)
        except ServiceError:
            if isinstance(token, str):
                async with self.db.pool.connection() as conn:
                    await registration_tokens.release_use(conn, token)
            raise
        if isinstance(token, str):
            async with self.db.pool.connection() as conn:
                await registration_tokens.complete_use(conn, token)
        if inhibit_login:
            return {"user_id": user_id, "home_server": self.server_name}
        return await self.login.start_session(
            user_id, device_id, display_name, refreshable=refreshable
        )

    async def _create_account(self, username: str | None, password: str | None) -> str:
        if username is not None:
            return await self.accounts.register_user(
                user_id_for(username, self.server_name), password
            )
        for _ in range(10):
            localpart = "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(12))
            try:
                return await self.accounts.register_user(localpart, password)
            except AccountError as exc:
                if exc.errcode != "M_USER_IN_USE":
                    raise
        raise ServiceError(500, "M_UNKNOWN", "Could not generate a free user id")

    async def token_validity(self, token: str) -> bool:
        if not self.requires_token:
            raise forbidden("Registration tokens are not used on this server")
        if "\x00" in token:
            return False
        async with self.db.pool.connection() as conn:
            return await registration_tokens.is_valid(conn, token, now_ms())


class RegistrationTokens:
    """The registration tokens admins hand out, when registration needs one."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_token(
        self,
        token: Any = None,
        uses_allowed: Any = None,
        expiry_time: Any = None,
        length: Any = DEFAULT_TOKEN_LENGTH,
    ) -> dict[str, Any]:
        """Create a token (random when none is given); the admin API's token object."""
        uses = _check_uses(uses_allowed)
        expiry = _check_expiry(expiry_time)
        if token is not None:
            if not isinstance(token, str) or not _TOKEN.fullmatch(token):
                raise ServiceError(
                    400,
                    "M_INVALID_PARAM",
                    "token must be 1 to 64 characters from A-Z a-z 0-9 . _ ~ -",
                )
            async with self.db.pool.connection() as conn:
                row = await registration_tokens.create_token(conn, token, uses, expiry)
            if row is None:
                raise ServiceError(400, "M_INVALID_PARAM", "Token already in use")
            return render_token(row)
        if (
            isinstance(length, bool)
            or not isinstance(length, int)
            or not 1 <= length <= MAX_TOKEN_LENGTH
        ):
            raise ServiceError(400, "M_INVALID_PARAM", "length must be an integer from 1 to 64")
        for _ in range(10):
            candidate = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(length))
            async with self.db.pool.connection() as conn:
                row = await registration_tokens.create_token(conn, candidate, uses, expiry)
            if row is not None:
                return render_token(row)
        raise ServiceError(500, "M_UNKNOWN", "Could not generate an unused token")

    async def list_tokens(self, valid: bool | None = None) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            rows = await registration_tokens.list_tokens(conn, valid, now_ms())
        return [render_token(row) for row in rows]

    async def get_token(self, token: str) -> dict[str, Any]:
        storable(token, "token")
        async with self.db.pool.connection() as conn:
            row = await registration_tokens.get_token(conn, token)
        if row is None:
            raise not_found("No such registration token")
        return render_token(row)

    async def update_token(self, token: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change uses_allowed and/or expiry_time (null removes the limit)."""
        storable(token, "token")
        uses = _check_uses(changes.get("uses_allowed"))
        expiry = _check_expiry(changes.get("expiry_time"))
        async with self.db.pool.connection() as conn:
            row = await registration_tokens.update_token(
                conn,
                token,
                set_uses_allowed="uses_allowed" in changes,
                uses_allowed=uses,
                set_expiry_time="expiry_time" in changes,
                expiry_time=expiry,
            )
        if row is None:
            raise not_found("No such registration token")
        return render_token(row)

    async def delete_token(self, token: str) -> None:
        storable(token, "token")
        async with self.db.pool.connection() as conn:
            if not await registration_tokens.delete_token(conn, token):
                raise not_found("No such registration token")
