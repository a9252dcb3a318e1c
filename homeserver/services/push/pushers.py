"""Pushers: the push gateways a user's devices registered (`/pushers`).

`http` pushers are sent to push gateways by services/push/gateway.py; `email`
pushers (app id `m.email`, the pushkey one of the user's verified addresses, when the
server has `email.enable_notifs`) get mail summaries from services/push/email.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from homeserver.services.accounts.auth import Requester
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError, invalid_param
from homeserver.services.threepids.addresses import EMAIL, canonical_email
from homeserver.storage.core.pool import Database
from homeserver.storage.push import pushers as store
from homeserver.storage.threepids import threepids

NOTIFY_PATH = "/_matrix/push/v1/notify"
EMAIL_APP_ID = "m.email"
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
MAX_FIELD_CHARS = 512


def _missing(name: str) -> ServiceError:
    return ServiceError(400, "M_MISSING_PARAM", f"'{name}' is required")


def _string(body: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    if name not in body or body[name] is None:
        if optional:
            return None
        raise _missing(name)
    value = body[name]
    if not isinstance(value, str):
        raise invalid_param(f"'{name}' must be a string")
    if len(value) > MAX_FIELD_CHARS:
        raise invalid_param(f"'{name}' is longer than {MAX_FIELD_CHARS} characters")
    return value


def check_gateway_url(url: Any) -> str:
    """An http(s) URL whose path is the push gateway API's notify endpoint."""
    if not isinstance(url, str):
        raise invalid_param("'data.url' must be a string")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid_param("'data.url' is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise invalid_param("'data.url' must be an https (or http) URL")
    if parts.path != NOTIFY_PATH:
        raise invalid_param(f"'data.url' must have the path {NOTIFY_PATH}")
    return url


def render(row: store.PusherRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pushkey": row.pushkey,
        "kind": row.kind,
        "app_id": row.app_id,
        "app_display_name": row.app_display_name,
        "device_display_name": row.device_display_name,
        "lang": row.lang,
        "data": row.data,
    }
    if row.profile_tag is not None:
        out["profile_tag"] = row.profile_tag
    return out


class PusherService:
    """`hs.pushers`."""

    def __init__(self, db: Database, *, email_notifs: bool = False) -> None:
        self.db = db
        self.email_notifs = email_notifs

    async def _check_email_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        """Mail goes only to the user's own verified addresses, as Synapse requires."""
        if not self.email_notifs:
            raise invalid_param("Email notifications are not enabled on this server")
        if app_id != EMAIL_APP_ID:
            raise invalid_param(f"Email pushers must have the app_id {EMAIL_APP_ID}")
        async with self.db.pool.connection() as conn:
            owner = await threepids.user_of(conn, EMAIL, canonical_email(pushkey, "pushkey"))
        if owner != user_id:
            raise ServiceError(400, "M_THREEPID_NOT_FOUND", "Email not found")

    async def add_email_pusher(self, user_id: str, address: str) -> None:
        """The email pusher a new account gets (`email.notif_for_new_users`)."""
        row = store.PusherRow(
            user_id,
            EMAIL_APP_ID,
            address,
            "email",
            "Email Notifications",
            address,
            None,
            "en",
            {},
        )
        async with self.db.pool.connection() as conn:
            await store.upsert_pusher(conn, row, None, now_ms())

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            return [render(r) for r in await store.pushers_of_user(conn, user_id)]

    async def set(self, requester: Requester, body: Mapping[str, Any]) -> None:
        """POST /pushers/set: create, update (kind set) or delete (kind null) a pusher."""
        if "kind" not in body:
            raise _missing("kind")
        app_id = _string(body, "app_id")
        pushkey = _string(body, "pushkey")
        assert app_id is not None and pushkey is not None
        if len(app_id) > MAX_APP_ID_CHARS:
            raise invalid_param(f"'app_id' is longer than {MAX_APP_ID_CHARS} characters")
        if len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
            raise invalid_param(f"'pushkey' is longer than {MAX_PUSHKEY_BYTES} bytes")
        kind = body["kind"]
        user_id = requester.user_id
        if kind is None:
            async with self.db.pool.connection() as conn:
                await store.delete_pusher(conn, user_id, app_id, pushkey)
            return
        if kind not in ("http", "email"):
            raise invalid_param("Only pushers of kind 'http' or 'email' are supported")
        data = body.get("data")
        if data is None:
            raise _missing("data")
        if not isinstance(data, dict):
            raise invalid_param("'data' must be an object")
        if kind == "email":
            await self._check_email_pusher(user_id, app_id, pushkey)
        else:
            if "url" not in data:
                raise _missing("data.url")
            check_gateway_url(data["url"])
            if "format" in data and data["format"] != "event_id_only":
                raise invalid_param("'data.format' must be 'event_id_only' when given")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise invalid_param("'append' must be a boolean")
        app_name = _string(body, "app_display_name")
        device_name = _string(body, "device_display_name")
        lang = _string(body, "lang")
        assert app_name is not None and device_name is not None and lang is not None
        row = store.PusherRow(
            user_id=user_id,
            app_id=app_id,
            pushkey=pushkey,
            kind=kind,
            app_display_name=app_name,
            device_display_name=device_name,
            profile_tag=_string(body, "profile_tag", optional=True),
            lang=lang,
            data=data,
        )
        async with self.db.pool.connection() as conn, conn.transaction():
            if not append:
                await store.delete_others(conn, user_id, app_id, pushkey)
            # An email pusher is the account's, not a device's: logging out keeps it.
            token_id = requester.token_id if kind == "http" else None
            await store.upsert_pusher(conn, row, token_id, now_ms())
