"""Registration of new accounts through the client API (the registration tokens
admins hand out are services/accounts/registration_tokens.py)."""

from __future__ import annotations

import secrets
import string
from enum import Enum
from typing import Any

from homeserver.services.accounts.accounts import (
    AccountError,
    AccountService,
    is_valid_localpart,
)
from homeserver.services.accounts.login import (
    LoginService,
    validate_device_id,
    validate_display_name,
)
from homeserver.services.accounts.uia import (
    DUMMY,
    EMAIL_IDENTITY,
    REGISTRATION_TOKEN,
    Challenge,
    UiaService,
)
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, forbidden
from homeserver.services.threepids.threepids import ThreepidService, in_use
from homeserver.services.threepids.validation import ValidatedThreepid
from homeserver.storage.accounts import accounts, registration_tokens
from homeserver.storage.core.pool import Database

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


class EmailStage(Enum):
    """Whether registering asks for a verified email (Synapse's
    `registrations_require_3pid: [email]`), offers it, or has no mail to verify with."""

    OFF = "off"
    OFFERED = "offered"
    REQUIRED = "required"


def _optional(body: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise bad_json(f"{key} must be a {kind.__name__}")
    return value


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
        threepids: ThreepidService,
        email_required: bool = False,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.open_registration = open_registration
        self.requires_token = requires_token
        self.accounts = accounts
        self.login = login
        self.uia = uia
        self.threepids = threepids
        self.email_stage = (
            EmailStage.REQUIRED
            if email_required
            else EmailStage.OFFERED
            if threepids.validation.enabled
            else EmailStage.OFF
        )

    def flows(self) -> list[list[str]]:
        """The registration flows on offer; 403 when nobody may register over the API.
        A verified email is one more stage when required, another flow when offered."""
        if not self.requires_token and not self.open_registration:
            raise forbidden("Registration is disabled on this server")
        first = [REGISTRATION_TOKEN] if self.requires_token else []
        if self.email_stage is EmailStage.REQUIRED:
            return [[*first, EMAIL_IDENTITY]]
        flows = [first or [DUMMY]]
        if self.email_stage is EmailStage.OFFERED:
            flows.append([*first, EMAIL_IDENTITY])
        return flows

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
        threepid = data.get("threepid")
        try:
            if threepid is not None and await self.threepids.owner_of_email(threepid["address"]):
                raise in_use()
            user_id = await self._create_account(username, password)
            if threepid is not None:
                await self.threepids.add_validated(
                    user_id, ValidatedThreepid(**threepid), new_account=True
                )
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
