"""Proving that someone reads a mailbox: `requestToken` mails a link with a single-use
token, the link's page validates the session, and one request then spends the
validated session (a password reset, an address added, an account registered).

Nothing here tells a requester whether an address belongs to an account. Every
`requestToken` answers the same way, after the same database work (a session is
always stored), and the mail goes out in the background, so neither the answer nor its
timing differs; what differs is only the mail: a password-reset link goes only to a
registered address; a registration or add link only to an unregistered one, and a
registered one is told of the attempt instead (its owner learns, the requester does
not). This is Synapse's `request_token_inhibit_3pid_errors` behaviour, without its
random sleep; the failure answers it has otherwise (M_THREEPID_NOT_FOUND,
M_THREEPID_IN_USE) would let anyone test addresses one by one.

Requests are rate limited per client address and per email address alike.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from homeserver.services.accounts.auth import hash_token
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, bad_json, invalid_param
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.tasks import cancel_and_wait
from homeserver.services.email.mailer import Mail, Mailer, MailError
from homeserver.services.email.templates import Purpose, already_in_use_mail, validation_mail
from homeserver.services.threepids.addresses import EMAIL, canonical_email, client_secret
from homeserver.storage.core.pool import Database
from homeserver.storage.threepids import threepids as store

log = logging.getLogger(__name__)

RATE_LIMIT_ACTION = "threepid_validation"
# Where each purpose's link leads (Synapse's paths, so links in flight survive a move).
SUBMIT_PATHS = {
    Purpose.PASSWORD_RESET: "_synapse/client/password_reset/email/submit_token",
    Purpose.REGISTRATION: "_matrix/client/unstable/registration/email/submit_token",
    Purpose.ADD_THREEPID: "_matrix/client/unstable/add_threepid/email/submit_token",
}
MAX_NEXT_LINK_LENGTH = 2048


class ValidationFailed(Exception):
    """A submitted token does not validate its session: the page says why."""


@dataclass(frozen=True)
class ValidatedThreepid:
    medium: str
    address: str
    validated_at: int


def _send_attempt(value: Any) -> int:
    if value is None:
        raise ServiceError(400, "M_MISSING_PARAM", "send_attempt is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json("send_attempt must be an integer")
    if not 0 <= value < 2**53:
        raise invalid_param("send_attempt is out of range")
    return value


def _next_link(value: Any, sid: str) -> str | None:
    """The page the validation page sends the user on to, with the sid appended (the
    client does not know it yet when the mail is sent)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_json("next_link must be a string")
    if len(value) > MAX_NEXT_LINK_LENGTH or urlsplit(value).scheme not in ("http", "https"):
        raise invalid_param("next_link must be an http(s) URL")
    return f"{value}{'&' if '?' in value else '?'}{urlencode({'sid': sid})}"


class ThreepidValidation:
    """`hs.validation`: requestToken, the link's token, and spending validated sessions."""

    def __init__(
        self,
        db: Database,
        mailer: Mailer,
        ratelimit: RateLimiter,
        *,
        server_name: str,
        public_baseurl: str,
        token_lifetime_ms: int,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.ratelimit = ratelimit
        self.server_name = server_name
        self.public_baseurl = public_baseurl.rstrip("/") + "/"
        self.token_lifetime_ms = token_lifetime_ms
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """Whether mail can be sent (an `email` block is configured)."""
        return self.mailer.enabled

    async def request_token(
        self, purpose: Purpose, body: Mapping[str, Any], client_ip: str
    ) -> dict[str, Any]:
        """POST .../email/requestToken: start (or continue) a session; `{"sid": ...}`."""
        secret = client_secret(body.get("client_secret"))
        if "email" not in body:
            raise ServiceError(400, "M_MISSING_PARAM", "email is required")
        address = canonical_email(body["email"])
        send_attempt = _send_attempt(body.get("send_attempt"))
        requested_next = body.get("next_link")
        _next_link(requested_next, "")  # refuse a bad one before counting the request
        await self.ratelimit.check(RATE_LIMIT_ACTION, f"ip:{client_ip}")
        await self.ratelimit.check(RATE_LIMIT_ACTION, f"{EMAIL}:{address}")
        now = now_ms()
        async with self.db.pool.connection() as conn, conn.transaction():
            owner = await store.user_of(conn, EMAIL, address)
            link_goes_out = (owner is not None) == (purpose is Purpose.PASSWORD_RESET)
            session = await store.open_session(conn, purpose.value, EMAIL, address, secret, now)
            if session is not None and send_attempt <= session.last_send_attempt:
                return {"sid": session.session_id}  # a retry of a request already served
            sid = session.session_id if session is not None else secrets.token_urlsafe(18)
            token = secrets.token_urlsafe(32)
            token_hash = hash_token(token) if link_goes_out else None
            next_link = _next_link(requested_next, sid)
            expires = now + self.token_lifetime_ms
            if session is None:
                row = store.SessionRow(
                    session_id=sid,
                    medium=EMAIL,
                    address=address,
                    client_secret=secret,
                    last_send_attempt=send_attempt,
                    token_hash=token_hash,
                    token_expires_ts=expires,
                    next_link=next_link,
                    validated_at=None,
                    consumed_ts=None,
                )
                await store.create_session(conn, row, purpose.value, now)
            else:
                await store.renew_token(conn, sid, send_attempt, token_hash, expires, next_link)
        mail = self._mail(purpose, address, owner, sid, secret, token)
        if mail is not None:
            self._send_later(mail)
        return {"sid": sid}

    def _mail(
        self, purpose: Purpose, address: str, owner: str | None, sid: str, secret: str, token: str
    ) -> Mail | None:
        if purpose is Purpose.PASSWORD_RESET:
            if owner is None:
                return None
        elif owner is not None:
            return already_in_use_mail(address, self.server_name, self.mailer.subjects)
        query = urlencode({"token": token, "client_secret": secret, "sid": sid})
        link = f"{self.public_baseurl}{SUBMIT_PATHS[purpose]}?{query}"
        return validation_mail(purpose, address, link, self.server_name, self.mailer.subjects)

    def _send_later(self, mail: Mail) -> None:
        task = asyncio.create_task(self._send(mail), name="validation mail")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, mail: Mail) -> None:
        try:
            await self.mailer.send(mail)
        except MailError as exc:
            log.warning("could not send a validation mail: %s", exc)

    async def submit_token(self, sid: str, secret: str, token: str) -> str | None:
        """The link was followed: validate its session; the session's next_link."""
        now = now_ms()
        if "\x00" in sid:
            raise ValidationFailed("This link does not belong to any validation.")
        async with self.db.pool.connection() as conn, conn.transaction():
            session = await store.session_for_update(conn, sid)
            if session is None or not hmac.compare_digest(session.client_secret, secret):
                raise ValidationFailed("This link does not belong to any validation.")
            if session.token_hash is None or not hmac.compare_digest(
                session.token_hash, hash_token(token)
            ):
                raise ValidationFailed("This link was already used, or a newer mail replaced it.")
            if session.token_expires_ts <= now:
                raise ValidationFailed("This link has expired. Please ask for a new mail.")
            await store.mark_validated(conn, sid, now)
            await store.delete_old_sessions(conn, now - 2 * self.token_lifetime_ms)
        return session.next_link

    async def take(self, creds: Any) -> ValidatedThreepid:
        """Spend the validated session named by `creds` ({sid, client_secret}): each
        validation proves the address for one request only."""
        if not isinstance(creds, dict):
            raise bad_json("threepid_creds must be an object")
        sid = creds.get("sid")
        if not isinstance(sid, str):
            raise bad_json("sid must be a string")
        secret = client_secret(creds.get("client_secret"))
        now = now_ms()
        async with self.db.pool.connection() as conn:
            session = None
            if "\x00" not in sid:
                session = await store.validated_session(
                    conn, sid, secret, now - self.token_lifetime_ms
                )
            if session is None or not await store.consume(conn, sid, now):
                raise ServiceError(400, "M_THREEPID_AUTH_FAILED", "No validated 3pid session found")
        assert session.validated_at is not None
        return ValidatedThreepid(session.medium, session.address, session.validated_at)

    async def close(self) -> None:
        await cancel_and_wait(list(self._sending))
