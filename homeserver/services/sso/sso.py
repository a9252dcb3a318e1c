"""Single sign-on: logins started at a provider and finished at the callback, the
accounts they reach (linked by the provider's subject id, Synapse's
`user_external_ids`, so a renamed email keeps the account), the login token handed
back to the client, usernames picked on first login, and re-authentication for
user-interactive auth.

A login in flight is kept in the database under its `state` and bound to the
browser that started it (a cookie whose hash is stored): a callback with an unknown
state, from another browser, or with an id token that fails a check is refused
with a page saying why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeserver.config.oidc import OidcProviderConfig
from homeserver.services.accounts.accounts import is_valid_localpart
from homeserver.services.accounts.devices import DeviceService
from homeserver.services.accounts.login import LoginService
from homeserver.services.accounts.profile import ProfileService
from homeserver.services.accounts.uia import PASSWORD, SSO, UiaService
from homeserver.services.core.clock import now_ms
from homeserver.services.sso.mapping import MappedUser, MappingError, map_claims
from homeserver.services.sso.provider_errors import LoginRefused, ProviderUnavailable
from homeserver.storage.accounts import accounts, profiles, tokens
from homeserver.storage.core.pool import Database
from homeserver.storage.sso import sso
from homeserver.storage.sso.sso import SsoLogin, UsernameSession

if TYPE_CHECKING:
    from homeserver.services.sso.oidc import OidcProvider

CALLBACK_PATH = "_synapse/client/oidc/callback"
PICK_USERNAME_PATH = "/_synapse/client/pick_username/account"
LOGIN_LIFETIME_MS = 10 * 60 * 1000
USERNAME_SESSION_LIFETIME_MS = 15 * 60 * 1000
# As Synapse: a taken localpart gets a number, up to this many tries.
MAX_LOCALPART_SUFFIX = 1000


class SsoError(Exception):
    """A login that cannot go on: the status and what to tell the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Started:
    """Send the browser to `url`, with `browser_token` in its cookie."""

    url: str
    browser_token: str


@dataclass(frozen=True)
class Finished:
    """The callback's outcome: go to `redirect` (the client with its login token, or
    the username page with `username_token` in a cookie); or ask the person to
    confirm going to `confirm` (a client not in sso.client_whitelist); or, for a
    re-authentication, nowhere (both None: the page tells the client it is done)."""

    redirect: str | None
    username_token: str | None = None
    confirm: str | None = None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def with_login_token(redirect_url: str, token: str) -> str:
    return redirect_url + ("&" if "?" in redirect_url else "?") + "loginToken=" + token


class SsoService:
    """The configured providers and the logins through them."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        public_baseurl: str,
        providers: tuple[OidcProviderConfig, ...],
        login: LoginService,
        uia: UiaService,
        devices: DeviceService,
        profile: ProfileService,
        *,
        client_whitelist: tuple[str, ...] = (),
        update_profile: bool = False,
        reserved: Callable[[str], bool] = lambda user_id: False,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.callback_url = public_baseurl.rstrip("/") + "/" + CALLBACK_PATH
        self.client_whitelist = (*client_whitelist, public_baseurl)
        self.reserved = reserved  # user ids claimed exclusively by an application service
        self.providers: dict[str, OidcProvider] = {}
        if providers:  # authlib, joserfc and cryptography: only for servers that use them
            from homeserver.services.sso.oidc import OidcProvider

            self.providers = {p.idp_id: OidcProvider(p) for p in providers}
        self.login = login
        self.uia = uia
        self.devices = devices
        self.profile = profile
        self.update_profile = update_profile  # display names follow the provider's

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    def identity_providers(self) -> list[dict[str, str]]:
        """The providers as `GET /login` lists them (id, name, icon, brand)."""
        found = []
        for provider in self.providers.values():
            config = provider.config
            entry = {"id": config.idp_id, "name": config.idp_name}
            if config.idp_icon is not None:
                entry["icon"] = config.idp_icon
            if config.idp_brand is not None:
                entry["brand"] = config.idp_brand
            found.append(entry)
        return found

    def provider(self, idp_id: str) -> OidcProvider:
        provider = self.providers.get(idp_id)
        if provider is None:
            raise SsoError(404, f"No identity provider {idp_id!r} on this server")
        return provider

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    async def start(
        self, idp_id: str, redirect_url: str | None, uia_session: str | None = None
    ) -> Started:
        """Begin a login (or a re-authentication for `uia_session`) at a provider."""
        provider = self.provider(idp_id)
        state, nonce, browser = (secrets.token_urlsafe(24) for _ in range(3))
        try:
            verifier = secrets.token_urlsafe(48) if await provider.uses_pkce() else None
            url = await provider.authorization_url(self.callback_url, state, nonce, verifier)
        except ProviderUnavailable as exc:
            raise _unavailable(provider, exc) from None
        now = now_ms()
        row = SsoLogin(
            state,
            _hash(browser),
            idp_id,
            nonce,
            verifier,
            redirect_url,
            uia_session,
            now + LOGIN_LIFETIME_MS,
        )
        async with self.db.pool.connection() as conn:
            await sso.insert_login(conn, row, now)
        return Started(url, browser)

    async def _take_login(self, params: Mapping[str, str], browser_token: str | None) -> SsoLogin:
        state = params.get("state")
        if not state:
            raise SsoError(400, "The identity provider's answer has no state")
        async with self.db.pool.connection() as conn:
            login = await sso.take_login(conn, state, now_ms())
        if login is None:
            raise SsoError(400, "Unknown or expired login (state); please start again")
        if browser_token is None or not secrets.compare_digest(
            _hash(browser_token), login.browser_hash
        ):
            raise SsoError(400, "This login was started in another browser; please start again")
        return login

    async def _claims(self, login: SsoLogin, params: Mapping[str, str]) -> dict[str, Any]:
        provider = self.provider(login.idp_id)
        if "error" in params:
            why = params.get("error_description") or params["error"]
            raise SsoError(403, f"{provider.config.idp_name} did not sign you in: {why}")
        code = params.get("code")
        if not code:
            raise SsoError(400, "The identity provider's answer has no code")
        try:
            issuer = (await provider.metadata())["issuer"]
            if "iss" in params and params["iss"] != issuer:
                raise LoginRefused(f"the answer comes from issuer {params['iss']!r}")
            return await provider.user_claims(
                code, self.callback_url, login.code_verifier, login.nonce
            )
        except ProviderUnavailable as exc:
            raise _unavailable(provider, exc) from None
        except LoginRefused as exc:
            raise SsoError(
                403, f"Sign-in with {provider.config.idp_name} was refused: {exc}"
            ) from None

    async def callback(self, params: Mapping[str, str], browser_token: str | None) -> Finished:
        """The provider sent the browser back: check everything, then log in, ask for
        a username, or complete the re-authentication."""
        login = await self._take_login(params, browser_token)
        config = self.provider(login.idp_id).config
        claims = await self._claims(login, params)
        if not all(req.met_by(claims) for req in config.attribute_requirements):
            raise SsoError(403, f"Your {config.idp_name} account may not sign in here")
        try:
            mapped = map_claims(config, claims)
        except MappingError as exc:
            raise SsoError(403, f"Cannot map your {config.idp_name} account: {exc}") from None
        async with self.db.pool.connection() as conn:
            user_id = await sso.user_for_external_id(conn, config.idp_id, mapped.subject)
        if login.uia_session is not None:
            await self._reauthenticated(login.uia_session, user_id)
            return Finished(None)
        if login.redirect_url is None:
            raise SsoError(400, "This login has nowhere to return to")
        sid = claims.get("sid")
        session = (config.idp_id, sid) if isinstance(sid, str) and sid else None
        if user_id is None:
            user_id = await self._existing_user(config, mapped)
        if user_id is None:
            return await self._first_login(config, mapped, login.redirect_url, session)
        if self.update_profile and mapped.display_name:
            await self.profile.update_display_name(user_id, mapped.display_name)
        return await self._logged_in(user_id, login.redirect_url, session)

    async def _reauthenticated(self, uia_session: str, user_id: str | None) -> None:
        if user_id is None or not await self.uia.complete_sso(uia_session, user_id):
            raise SsoError(403, "You signed in as someone else than the account asking")

    async def _existing_user(self, config: OidcProviderConfig, mapped: MappedUser) -> str | None:
        """With allow_existing_users, the account the mapped localpart names, now linked."""
        if not config.allow_existing_users or mapped.localpart is None:
            return None
        user_id = f"@{mapped.localpart}:{self.server_name}"
        async with self.db.pool.connection() as conn:
            if not await accounts.user_exists(conn, user_id):
                return None
            await sso.link_external_id(conn, config.idp_id, mapped.subject, user_id)
        return user_id

    async def _first_login(
        self,
        config: OidcProviderConfig,
        mapped: MappedUser,
        redirect_url: str,
        session: tuple[str, str] | None,
    ) -> Finished:
        if not config.enable_registration:
            raise SsoError(403, "No account here is linked to yours, and new ones are not made")
        if mapped.localpart is None or config.mapping.confirm_localpart:
            token = secrets.token_urlsafe(24)
            now = now_ms()
            waiting = UsernameSession(
                config.idp_id,
                mapped.subject,
                mapped.localpart,
                mapped.display_name,
                session[1] if session else None,
                redirect_url,
                now + USERNAME_SESSION_LIFETIME_MS,
            )
            async with self.db.pool.connection() as conn:
                await sso.insert_username_session(conn, _hash(token), waiting, now)
            return Finished(PICK_USERNAME_PATH, username_token=token)
        for attempt in range(MAX_LOCALPART_SUFFIX):
            localpart = mapped.localpart + (str(attempt) if attempt else "")
            user_id = await self._create_user(config.idp_id, mapped, localpart)
            if user_id is not None:
                return await self._logged_in(user_id, redirect_url, session)
        raise SsoError(409, "Could not find a free username for you")

    async def _create_user(self, idp_id: str, mapped: MappedUser, localpart: str) -> str | None:
        """Create the account and link it in one transaction; None when it is taken."""
        user_id = f"@{localpart}:{self.server_name}"
        if not is_valid_localpart(localpart) or len(user_id.encode()) > 255:
            raise SsoError(400, f"{localpart!r} cannot be a username here")
        if self.reserved(user_id):
            return None
        async with self.db.pool.connection() as conn, conn.transaction():
            if not await accounts.create_user(
                conn, user_id, None, is_admin=False, is_guest=False, now_ms=now_ms()
            ):
                return None
            if not await sso.link_external_id(conn, idp_id, mapped.subject, user_id):
                # Another first login of the same person won the race: no second account.
                raise SsoError(409, "Your account was just created; please sign in again")
            display_name = mapped.display_name or localpart
            await profiles.set_profile_field(conn, user_id, "displayname", display_name)
        return user_id

    async def _logged_in(
        self, user_id: str, redirect_url: str, session: tuple[str, str] | None
    ) -> Finished:
        """Back to the client with a login token (carrying the provider's `session`,
        which the device will belong to): straight to a trusted client, through a page
        naming it to any other."""
        async with self.db.pool.connection() as conn:
            info = await accounts.get_login_info(conn, user_id)
        if info is None or info[1]:
            raise SsoError(403, "This account has been deactivated")
        token = (await self.login.create_login_token(user_id, session))["login_token"]
        url = with_login_token(redirect_url, token)
        if any(redirect_url.startswith(prefix) for prefix in self.client_whitelist):
            return Finished(url)
        return Finished(None, confirm=url)

    async def username_session(self, token: str | None) -> UsernameSession:
        if token:
            async with self.db.pool.connection() as conn:
                session = await sso.get_username_session(conn, _hash(token), now_ms())
            if session is not None:
                return session
        raise SsoError(400, "This sign-up has expired or was finished; please sign in again")

    async def username_available(self, localpart: str) -> bool:
        user_id = f"@{localpart}:{self.server_name}"
        if not is_valid_localpart(localpart) or len(user_id.encode()) > 255:
            return False
        if self.reserved(user_id):
            return False
        async with self.db.pool.connection() as conn:
            return not await accounts.user_exists(conn, user_id)

    async def pick_username(self, token: str | None, localpart: str) -> Finished:
        """Create the account the person named on the username page; where to go next."""
        session = await self.username_session(token)
        if not is_valid_localpart(localpart):
            raise SsoError(400, "Usernames may hold only a-z, 0-9 and ._=-/+")
        mapped = MappedUser(session.external_id, localpart, session.display_name)
        user_id = await self._create_user(session.idp_id, mapped, localpart)
        if user_id is None:
            raise SsoError(409, f"The username {localpart!r} is taken")
        async with self.db.pool.connection() as conn:
            await sso.delete_username_session(conn, _hash(token or ""))
        provider_session = (session.idp_id, session.auth_session) if session.auth_session else None
        return await self._logged_in(user_id, session.redirect_url, provider_session)

    async def linked_providers(self, user_id: str) -> list[str]:
        """The configured providers this account is linked to."""
        if not self.providers:
            return []
        async with self.db.pool.connection() as conn:
            linked = await sso.providers_of_user(conn, user_id)
        return [idp for idp in linked if idp in self.providers]

    async def backchannel_logout(self, logout_token: str) -> None:
        """The provider ended a session (OpenID Connect Back-Channel Logout): sign out
        the devices that were signed in through it."""
        issuer = _unverified_issuer(logout_token)
        provider = next(
            (
                p
                for p in self.providers.values()
                if p.config.backchannel_logout_enabled and p.config.issuer == issuer
            ),
            None,
        )
        if provider is None:
            raise SsoError(400, "No provider here with back-channel logout issued this token")
        try:
            claims = await provider.logout_token_claims(logout_token)
        except ProviderUnavailable as exc:
            raise _unavailable(provider, exc) from None
        except LoginRefused as exc:
            raise SsoError(400, f"Invalid logout token: {exc}") from None
        sid = claims.get("sid")
        if not isinstance(sid, str) or not sid:
            raise SsoError(400, "Logout tokens without a session id (sid) are not supported")
        idp_id, sub = provider.idp_id, claims.get("sub")
        async with self.db.pool.connection() as conn:
            found = await tokens.devices_of_provider_session(conn, idp_id, sid)
            owner = await sso.user_for_external_id(conn, idp_id, sub) if sub else None
        by_user: dict[str, list[str]] = {}
        for user_id, device_id in found:
            if sub and not provider.config.backchannel_logout_ignore_sub and user_id != owner:
                continue
            by_user.setdefault(user_id, []).append(device_id)
        for user_id, device_ids in by_user.items():
            await self.devices.delete_devices(user_id, device_ids)

    async def reauth_flows(self, user_id: str) -> list[list[str]]:
        """How this account proves itself again: its password if it has one, its
        provider if it is linked to one (an account may have either or both)."""
        linked = await self.linked_providers(user_id)
        if not linked:
            return [[PASSWORD]]
        async with self.db.pool.connection() as conn:
            info = await accounts.get_login_info(conn, user_id)
        has_password = info is not None and info[0] is not None
        return [[PASSWORD], [SSO]] if has_password else [[SSO]]


def _unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, read only to choose which provider checks it."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def _unavailable(provider: OidcProvider, exc: ProviderUnavailable) -> SsoError:
    return SsoError(
        503, f"{provider.config.idp_name} cannot be reached right now ({exc}); try again later"
    )
