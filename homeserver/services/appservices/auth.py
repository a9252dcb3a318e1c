"""Requests made with an application service's as_token: who they act as (the
service's sender, or the `user_id` it asserts in its namespace), checked against the
accounts that exist; and the accounts and logins a service asks for in its namespace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.services.accounts.accounts import AccountError, AccountService
from homeserver.services.accounts.auth import Requester
from homeserver.services.accounts.login import (
    LoginService,
    user_id_from_identifier,
    validate_device_id,
    validate_display_name,
)
from homeserver.services.accounts.registration import user_id_for
from homeserver.services.appservices.registry import (
    AppService,
    AppServiceRegistry,
    check_identity,
)
from homeserver.services.core.errors import ServiceError
from homeserver.storage.accounts import accounts, devices
from homeserver.storage.core.pool import Database


class AppServiceAuth:
    """Requests made with an as_token: who they act as (the sender, or the asserted
    `user_id` in the AS's namespace), checked against the accounts that exist; and the
    accounts and logins an AS asks for in its namespace."""

    KNOWN_SIZE = 10_000

    def __init__(
        self,
        db: Database,
        server_name: str,
        registry: AppServiceRegistry,
        accounts: AccountService,
        login: LoginService,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.registry = registry
        self.accounts = accounts
        self.login = login
        # Users seen to exist: accounts are never deleted, so this cannot go stale.
        self._known: dict[str, None] = {}

    async def requester(
        self, service: AppService, user_id: str | None, device_id: str | None
    ) -> Requester:
        """The requester an AS request acts as; 403 outside its namespace or for a user
        it has not registered, or a device the user does not have."""
        target = service.sender if user_id is None else user_id
        check_identity(service, target)
        if target not in self._known:
            await self._ensure_exists(service, target)
        device = ""
        if device_id is not None:
            device = validate_device_id(device_id) or ""
            async with self.db.pool.connection() as conn:
                if await devices.get_device(conn, target, device) is None:
                    raise ServiceError(403, "M_UNKNOWN_DEVICE", f"{target} has no device {device}")
        return Requester(
            user_id=target,
            device_id=device,
            token_id=0,
            is_admin=False,
            is_guest=False,
            appservice_id=service.id,
        )

    async def _ensure_exists(self, service: AppService, user_id: str) -> None:
        async with self.db.pool.connection() as conn:
            exists = await accounts.user_exists(conn, user_id)
        if not exists:
            if user_id != service.sender:
                raise ServiceError(
                    403, "M_FORBIDDEN", f"Application service has not registered {user_id}"
                )
            try:
                await self.accounts.register_user(user_id, None)
            except AccountError as exc:
                if exc.errcode != "M_USER_IN_USE":
                    raise
        if len(self._known) >= self.KNOWN_SIZE:
            self._known.pop(next(iter(self._known)))
        self._known[user_id] = None

    async def register_user_for(
        self, service: AppService, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`POST /register` with `m.login.application_service`: no user-interactive auth,
        any id in the AS's user namespace not claimed exclusively by another AS."""
        username = body.get("username")
        if not isinstance(username, str) or not username:
            raise ServiceError(400, "M_MISSING_PARAM", "username is required")
        user_id = user_id_for(username.removeprefix("@").split(":", 1)[0], self.server_name)
        if not service.is_interested_in_user(user_id):
            raise ServiceError(
                400, "M_EXCLUSIVE", f"{user_id} is not in the application service's namespace"
            )
        self.registry.check_user_id_free(user_id, service)
        inhibit_login = _flag(body, "inhibit_login")
        refreshable = _flag(body, "refresh_token")
        device_id = validate_device_id(body.get("device_id"))
        display_name = validate_display_name(body.get("initial_device_display_name"))
        await self.accounts.register_user(user_id, None)
        if inhibit_login:
            return {"user_id": user_id, "home_server": self.server_name}
        return await self.login.start_session(
            user_id, device_id, display_name, refreshable=refreshable
        )

    async def login_as(self, service: AppService, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /login` with `m.login.application_service`: a device and access token for
        a registered user in the AS's namespace (bridges use this for encryption)."""
        user_id = user_id_from_identifier(dict(body), self.server_name)
        check_identity(service, user_id)
        async with self.db.pool.connection() as conn:
            info = await accounts.get_login_info(conn, user_id)
        if info is None:
            raise ServiceError(403, "M_FORBIDDEN", f"{user_id} is not registered")
        if info[1]:
            raise ServiceError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        return await self.login.start_session(
            user_id,
            validate_device_id(body.get("device_id")),
            validate_display_name(body.get("initial_device_display_name")),
            refreshable=_flag(body, "refresh_token"),
        )


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ServiceError(400, "M_BAD_JSON", f"{key} must be a boolean")
    return value
