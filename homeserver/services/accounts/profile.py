"""User profiles: display name, avatar URL and any other namespaced field.

`displayname` and `avatar_url` are strings, re-announced in every joined room when
they change; other fields (`m.tz`, `org.example.job_title`, ...) hold any JSON and
stay on the profile. The whole profile, as JSON, must stay under 64 KiB.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from federation.identifiers import server_name_of
from homeserver.services.accounts.auth import Requester
from homeserver.services.core.errors import ServiceError, bad_json, forbidden, not_found
from homeserver.services.core.ratelimit import RateLimiter
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.remote.client import FederationClient, FederationError, RequestFailed
from homeserver.services.rooms.membership import MembershipService
from homeserver.storage.accounts import accounts, profiles
from homeserver.storage.accounts.profiles import FullProfile, ProfileField
from homeserver.storage.core.pool import Database

# The fields with columns of their own, announced in the user's membership events.
FIELDS: tuple[ProfileField, ...] = ("displayname", "avatar_url")
MAX_LENGTHS: dict[ProfileField, int] = {"displayname": 256, "avatar_url": 1000}
MAX_KEY_BYTES = 255
MAX_PROFILE_BYTES = 64 * 1024  # the spec's limit on the whole profile, as JSON
# Profile keys the spec allows: the two classic fields, m.tz, or namespaced custom keys.
_KEY_NAME = re.compile(r"avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def _check_key(key: str) -> None:
    """400 unless `key` is a profile key the spec allows."""
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ServiceError(
            400, "M_KEY_TOO_LARGE", f"Profile keys are at most {MAX_KEY_BYTES} bytes"
        )
    if not _KEY_NAME.fullmatch(key):
        raise ServiceError(400, "M_INVALID_PARAM", "Invalid profile key")


def _classic(key: str) -> ProfileField | None:
    return next((field for field in FIELDS if field == key), None)


def _as_json(profile: FullProfile | None) -> dict[str, Any]:
    """The profile as clients see it: unset classic fields are absent."""
    if profile is None:
        return {}
    out: dict[str, Any] = {}
    if profile.displayname:
        out["displayname"] = profile.displayname
    if profile.avatar_url:
        out["avatar_url"] = profile.avatar_url
    out.update(profile.fields)
    return out


def _valid_remote_key(key: Any) -> bool:
    return (
        isinstance(key, str)
        and len(key.encode("utf-8")) <= MAX_KEY_BYTES
        and _KEY_NAME.fullmatch(key) is not None
    )


def _checked_value(field: ProfileField, value: Any) -> str | None:
    """A value to store; "" clears the field like DELETE does."""
    if not isinstance(value, str):
        raise bad_json(f"{field} must be a string")
    ensure_storable(value, field)
    if len(value) > MAX_LENGTHS[field]:
        raise ServiceError(
            400, "M_INVALID_PARAM", f"{field} is longer than {MAX_LENGTHS[field]} characters"
        )
    return value or None


def _custom_value(key: str, value: Any) -> Any:
    """A value for a field other than displayname and avatar_url: any JSON (null
    included, stored as null as the spec asks), but a time zone is a string."""
    if key == "m.tz" and not isinstance(value, str):
        raise bad_json("m.tz must be a string")
    ensure_storable(value, key)
    return value


class ProfileService:
    """Profiles of local users, and of remote users as their servers tell them."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        federation_client: FederationClient,
        ratelimiter: RateLimiter,
        membership: MembershipService,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.federation_client = federation_client
        self.ratelimiter = ratelimiter
        self.membership = membership

    async def get_profile(self, user_id: str, *, ask_remote: bool = False) -> dict[str, Any]:
        """Every field of a local user; 404 for users we do not know. With `ask_remote`
        (a client's lookup, never another server's), a remote user's profile is asked of
        their server."""
        server = server_name_of(user_id, "@")
        if ask_remote and server is not None and server != self.server_name:
            return await self._remote_profile(server, user_id)
        if server != self.server_name:
            raise not_found("Profile not found")
        async with self.db.pool.connection() as conn:
            row = await profiles.get_full_profile(conn, user_id)
            if row is None and not await accounts.user_exists(conn, user_id):
                raise not_found("Profile not found")
        return _as_json(row)

    async def _remote_profile(self, server: str, user_id: str) -> dict[str, Any]:
        """`GET /query/profile` on the user's server; of its answer only fields with valid
        keys are passed on, display name and avatar only as non-empty strings."""
        try:
            answer = await self.federation_client.get_json(
                server, "/_matrix/federation/v1/query/profile", {"user_id": user_id}
            )
        except RequestFailed as exc:
            if exc.status == 404:
                raise not_found("Profile not found") from None
            raise ServiceError(502, "M_UNKNOWN", f"{server} refused the profile query") from None
        except FederationError as exc:
            raise ServiceError(502, "M_UNKNOWN", f"Cannot reach {server}: {exc}") from None
        if not isinstance(answer, dict):
            return {}
        return {
            key: value
            for key, value in answer.items()
            if _valid_remote_key(key)
            and (_classic(key) is None or (isinstance(value, str) and value))
        }

    async def get_profile_field(
        self, user_id: str, key: str, *, ask_remote: bool = False
    ) -> dict[str, Any]:
        """{key: value}, or 404 when the user has no such field."""
        _check_key(key)
        profile = await self.get_profile(user_id, ask_remote=ask_remote)
        if key not in profile:
            raise not_found(f"Profile has no {key}")
        return {key: profile[key]}

    async def set_profile_field(
        self, requester: Requester, user_id: str, key: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Set (body {key: value}) or delete (body None) one field of the requester's own
        profile; returns the whole profile as it now is. Refused with 400
        M_PROFILE_TOO_LARGE when the profile would reach 64 KiB."""
        _check_key(key)
        if requester.user_id != user_id:
            raise forbidden("Cannot change the profile of another user")
        field = _classic(key)
        value: Any = None
        if body is not None:
            if key not in body:
                raise ServiceError(400, "M_MISSING_PARAM", f"Missing {key}")
            value = _checked_value(field, body[key]) if field else _custom_value(key, body[key])
        # A profile change is announced in every joined room: as costly as sending messages.
        await self.ratelimiter.check("message", requester.user_id, requester)
        async with self.db.pool.connection() as conn, conn.transaction():
            profile = _as_json(await profiles.lock_profile(conn, user_id))
            if body is None or (field is not None and value is None):
                profile.pop(key, None)
            else:
                profile[key] = value
                if len(orjson.dumps(profile)) >= MAX_PROFILE_BYTES:
                    raise ServiceError(
                        400, "M_PROFILE_TOO_LARGE", "The profile would be larger than 64 KiB"
                    )
            if field is not None:
                await profiles.set_profile_field(conn, user_id, field, value)
            elif body is None:
                await profiles.delete_extra_field(conn, user_id, key)
            else:
                await profiles.set_extra_field(conn, user_id, key, value)
        if field is not None:
            await self.membership.announce_profile(
                user_id, {name: profile[name] for name in FIELDS if name in profile}
            )
        return profile

    async def update_display_name(self, user_id: str, display_name: str) -> None:
        """The server itself sets a local user's display name (from their identity
        provider, at sign-in); announced in their rooms when it changed."""
        value = _checked_value("displayname", display_name)
        async with self.db.pool.connection() as conn, conn.transaction():
            profile = _as_json(await profiles.lock_profile(conn, user_id))
            if value is None or profile.get("displayname") == value:
                return
            profile["displayname"] = value
            await profiles.set_profile_field(conn, user_id, "displayname", value)
        await self.membership.announce_profile(
            user_id, {name: profile[name] for name in FIELDS if name in profile}
        )
