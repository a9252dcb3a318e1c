"""Who is making a request: access token to requester."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.storage.accounts import tokens
from homeserver.storage.core.pool import Database

LOCKED = "M_USER_LOCKED"
SUSPENDED = "M_USER_SUSPENDED"


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str
    token_id: int
    is_admin: bool
    is_guest: bool
    # set when an application service makes the request with its as_token
    appservice_id: str | None = None
    # moderation: a suspended user reads but cannot send; a shadow-banned one is told
    # their sends succeeded while nothing is stored
    suspended: bool = False
    shadow_banned: bool = False
    # an admin's rate-limit override for this user: (per second, burst); (0, 0) exempts
    ratelimit: tuple[float, int] | None = None


def check_not_suspended(requester: Requester) -> None:
    """A suspended account reads, leaves and redacts, but sends, joins and invites
    nothing (403 M_USER_SUSPENDED, the spec's error)."""
    if requester.suspended:
        raise ServiceError(403, SUSPENDED, "This account has been suspended")


def shadow_event_id() -> str:
    """The event id a shadow-banned user is answered with: well-formed, stored nowhere."""
    return "$" + secrets.token_urlsafe(32)


class AuthFailure(Exception):
    """The token is unknown, expired or belongs to a deactivated account."""

    def __init__(
        self, message: str, *, soft_logout: bool = False, errcode: str = "M_UNKNOWN_TOKEN"
    ) -> None:
        super().__init__(message)
        self.soft_logout = soft_logout
        self.errcode = errcode


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token(prefix: str) -> str:
    """An opaque token; the prefix only helps people tell token kinds apart in logs."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


class TokenCache:
    """Recently validated access tokens, so most requests skip the database.

    Deleting an access token fires a database trigger whose NOTIFY evicts it in every
    process (see services/core/notifier.py); paths that log users out also evict in-process
    at once. Entries age out after `ttl` seconds, bounding the effect of a lost
    notification.
    """

    def __init__(self, size: int = 10_000, ttl: float = 30.0) -> None:
        self._size = size
        self._ttl = ttl
        self._entries: OrderedDict[bytes, tuple[Requester, int | None, float]] = OrderedDict()

    def get(self, token_hash: bytes) -> tuple[Requester, int | None] | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        requester, expires_ts, stored = entry
        if time.monotonic() - stored > self._ttl:
            del self._entries[token_hash]
            return None
        return requester, expires_ts

    def put(self, token_hash: bytes, requester: Requester, expires_ts: int | None) -> None:
        self._entries[token_hash] = (requester, expires_ts, time.monotonic())
        self._entries.move_to_end(token_hash)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def evict(self, token_hash: bytes) -> None:
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        """Forget every token (evictions from other processes may have been missed)."""
        self._entries.clear()

    def forget(self, user_id: str, device_ids: Iterable[str] | None = None) -> None:
        """Evict the user's cached tokens (of these devices only, when given)."""
        devices = None if device_ids is None else set(device_ids)
        for key in [
            k
            for k, (r, _, _) in self._entries.items()
            if r.user_id == user_id and (devices is None or r.device_id in devices)
        ]:
            del self._entries[key]


class AuthService:
    """Access tokens to requesters; most requests are answered from the token cache."""

    def __init__(self, db: Database, cache: TokenCache) -> None:
        self.db = db
        self.cache = cache

    async def authenticate(self, token: str) -> Requester:
        token_hash = hash_token(token)
        hit = self.cache.get(token_hash)
        if hit is not None:
            requester, expires_ts = hit
            if expires_ts is None or expires_ts > now_ms():
                return requester
            self.cache.evict(token_hash)
        async with self.db.pool.connection() as conn:
            row = await tokens.lookup_access_token(conn, token_hash)
        if row is None or row.deactivated:
            raise AuthFailure("Unknown access token")
        if row.locked:
            raise AuthFailure("This account has been locked", soft_logout=True, errcode=LOCKED)
        if row.expires_ts is not None and row.expires_ts <= now_ms():
            # An expired token that could be refreshed: the client should refresh, not log out.
            raise AuthFailure("Access token has expired", soft_logout=True)
        if row.refresh_token_id is not None and not row.used:
            async with self.db.pool.connection() as conn:
                await tokens.mark_access_token_used(conn, row.token_id, row.refresh_token_id)
        requester = Requester(
            user_id=row.user_id,
            device_id=row.device_id,
            token_id=row.token_id,
            is_admin=row.is_admin,
            is_guest=row.is_guest,
            suspended=row.suspended,
            shadow_banned=row.shadow_banned,
            ratelimit=None
            if row.override_per_second is None or row.override_burst is None
            else (row.override_per_second, row.override_burst),
        )
        self.cache.put(token_hash, requester, row.expires_ts)
        return requester
