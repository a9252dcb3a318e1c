"""The email addresses of accounts: listing, adding (with a validated session) and
removing them (`/account/3pid...`)."""

from __future__ import annotations

from typing import Any

from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, invalid_param
from homeserver.services.push.pushers import EMAIL_APP_ID, PusherService
from homeserver.services.threepids.addresses import EMAIL, canonical_email
from homeserver.services.threepids.validation import ThreepidValidation, ValidatedThreepid
from homeserver.storage.core.pool import Database
from homeserver.storage.push import pushers as pusher_store
from homeserver.storage.threepids import threepids as store


def in_use() -> ServiceError:
    return ServiceError(400, "M_THREEPID_IN_USE", "This email address is already in use")


def admin_threepids(value: Any) -> set[str]:
    """The addresses of an admin's `threepids` list ({medium: email, address} each)."""
    if not isinstance(value, list):
        raise invalid_param("threepids must be a list")
    wanted: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or item.get("medium") != EMAIL:
            raise invalid_param("threepids holds {medium: email, address} objects only")
        wanted.add(canonical_email(item.get("address"), "threepids.address"))
    return wanted


class ThreepidService:
    """`hs.threepids`."""

    def __init__(
        self,
        db: Database,
        validation: ThreepidValidation,
        pushers: PusherService,
        *,
        changes_enabled: bool,
        notify_new_users: bool,
    ) -> None:
        self.db = db
        self.validation = validation
        self.pushers = pushers
        self.changes_enabled = changes_enabled
        # `email.enable_notifs` and `email.notif_for_new_users`: a new account's
        # address gets an email pusher.
        self.notify_new_users = notify_new_users

    @property
    def can_change(self) -> bool:
        """What `m.3pid_changes` says: users may add and remove addresses."""
        return self.changes_enabled and self.validation.enabled

    def check_changes_allowed(self) -> None:
        if not self.changes_enabled:
            raise ServiceError(400, "M_FORBIDDEN", "3PID changes are disabled on this server")

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            rows = await store.threepids_of_user(conn, user_id)
        return [
            {
                "medium": r.medium,
                "address": r.address,
                "validated_at": r.validated_at,
                "added_at": r.added_at,
            }
            for r in rows
        ]

    async def add_validated(
        self, user_id: str, threepid: ValidatedThreepid, *, new_account: bool = False
    ) -> None:
        """Give the proven address to the user; M_THREEPID_IN_USE if it is another's
        (only someone who read the mail gets this far, so it tells no outsider)."""
        async with self.db.pool.connection() as conn:
            owner = await store.add_threepid(
                conn, user_id, threepid.medium, threepid.address, threepid.validated_at, now_ms()
            )
        if owner != user_id:
            raise in_use()
        if new_account and self.notify_new_users:
            await self.pushers.add_email_pusher(user_id, threepid.address)

    async def add(self, user_id: str, body: dict[str, Any]) -> None:
        """POST /account/3pid/add (after user-interactive auth)."""
        self.check_changes_allowed()
        threepid = await self.validation.take(
            {"sid": body.get("sid"), "client_secret": body.get("client_secret")}
        )
        await self.add_validated(user_id, threepid)

    async def delete(self, user_id: str, medium: Any, address: Any) -> None:
        """POST /account/3pid/delete: an address that is not the user's is ignored."""
        self.check_changes_allowed()
        if not isinstance(medium, str):
            raise bad_json("medium must be a string")
        if medium != EMAIL:
            return
        canonical = canonical_email(address, "address")
        async with self.db.pool.connection() as conn, conn.transaction():
            if await store.delete_threepid(conn, user_id, medium, canonical):
                await pusher_store.delete_pusher(conn, user_id, EMAIL_APP_ID, canonical)

    async def set_by_admin(self, user_id: str, wanted: set[str]) -> None:
        """Synapse's admin `PUT /users/{userId}` with `threepids`: the account's
        addresses become exactly these (trusted as validated: the admin vouches)."""
        now = now_ms()
        async with self.db.pool.connection() as conn, conn.transaction():
            current = {r.address for r in await store.threepids_of_user(conn, user_id)}
            for address in current - wanted:
                await store.delete_threepid(conn, user_id, EMAIL, address)
                await pusher_store.delete_pusher(conn, user_id, EMAIL_APP_ID, address)
            for address in sorted(wanted - current):
                if await store.add_threepid(conn, user_id, EMAIL, address, now, now) != user_id:
                    raise in_use()

    async def owner_of(self, medium: str, address: str) -> str | None:
        """Who has this address (None for any other medium than email)."""
        if medium != EMAIL:
            return None
        return await self.owner_of_email(canonical_email(address, "address"))

    async def owner_of_email(self, address: str) -> str | None:
        async with self.db.pool.connection() as conn:
            return await store.user_of(conn, EMAIL, address)
