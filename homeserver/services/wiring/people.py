"""Composition-root steps: accounts and their addresses: tokens, devices, passwords,
logins, mail and address validation, user-interactive auth, registration, account data.

Each step sets the `Homeserver` fields it builds from fields earlier steps set;
the order is `build_homeserver`'s (`services/wiring/__init__.py`)."""

from __future__ import annotations

from homeserver.services.accounts.account_data import AccountDataService
from homeserver.services.accounts.accounts import AccountService
from homeserver.services.accounts.auth import AuthService
from homeserver.services.accounts.devices import DeviceService
from homeserver.services.accounts.filters import FilterService
from homeserver.services.accounts.login import LoginService
from homeserver.services.accounts.openid import OpenIdService
from homeserver.services.accounts.passwords import Passwords
from homeserver.services.accounts.registration import RegistrationService
from homeserver.services.accounts.registration_tokens import RegistrationTokens
from homeserver.services.accounts.uia import UiaService
from homeserver.services.email.mailer import Mailer
from homeserver.services.homeserver import Homeserver
from homeserver.services.push.pushers import PusherService
from homeserver.services.threepids.threepids import ThreepidService
from homeserver.services.threepids.validation import ThreepidValidation


def build_accounts(hs: Homeserver) -> None:
    """Tokens, devices, accounts, logins, user-interactive auth, registration,
    account data and filters."""
    db, config = hs.db, hs.config
    hs.accounts_auth = AuthService(db, hs.token_cache)
    hs.devices = DeviceService(db, hs.e2ee_device_lists, hs.token_cache, hs.devices_seen)
    hs.passwords = Passwords(
        config.argon2_time_cost, config.password_hash_concurrency, config.argon2_memory_cost
    )
    hs.accounts = AccountService(db, config.server_name, hs.passwords)
    hs.login = LoginService(db, config.server_name, config.access_token_lifetime_ms, hs.passwords)
    build_threepids(hs)
    hs.uia = UiaService(db, config.server_name, hs.login, hs.validation)
    hs.registration = RegistrationService(
        db,
        config.server_name,
        open_registration=config.open_registration,
        requires_token=config.registration_requires_token,
        accounts=hs.accounts,
        login=hs.login,
        uia=hs.uia,
        threepids=hs.threepids,
        email_required="email" in config.registrations_require_3pid,
    )
    hs.registration_tokens = RegistrationTokens(db)
    hs.account_data = AccountDataService(db, hs.streams, hs.notifier)
    hs.filters = FilterService(db)
    hs.openid = OpenIdService(db, config.server_name)


def build_threepids(hs: Homeserver) -> None:
    """Mail (when configured), address validation, the addresses of accounts."""
    config = hs.config
    hs.mailer = Mailer.from_config(config)
    hs.validation = ThreepidValidation(
        hs.db,
        hs.mailer,
        hs.ratelimit,
        server_name=config.server_name,
        public_baseurl=config.client_base_url,
        token_lifetime_ms=config.email_validation_token_lifetime,
    )
    hs.pushers = PusherService(hs.db, email_notifs=config.email_enable_notifs)
    hs.threepids = ThreepidService(
        hs.db,
        hs.validation,
        hs.pushers,
        changes_enabled=config.enable_3pid_changes,
        notify_new_users=config.email_enable_notifs and config.email_notif_for_new_users,
    )
