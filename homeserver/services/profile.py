"""User profiles: display name and avatar URL.

Only `displayname` and `avatar_url` are stored (the `m.profile_fields` capability
says so); other valid profile keys read as absent and cannot be set.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from federation.identifiers import server_name_of
from homeserver.services.auth import Requester
from homeserver.services.errors import ServiceError, bad_json, forbidden, not_found
from homeserver.services.federation_client import FederationError, RequestFailed
from homeserver.services.stored_json import ensure_storable
from homeserver.storage import accounts, profiles
from homeserver.storage.profiles import ProfileField

if TYPE_CHECKING:  # the Homeserver imports the services that import this module
    from homeserver.services.homeserver import Homeserver

FIELDS: tuple[ProfileField, ...] = ("displayname", "avatar_url")
MAX_LENGTHS: dict[ProfileField, int] = {"displayname": 256, "avatar_url": 1000}
MAX_KEY_BYTES = 255
# Profile keys the spec allows: the two classic fields, m.tz, or namespaced custom keys.
_KEY_NAME = re.compile(r"avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_MXC_URI = re.compile(r"mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+")


def _check_key(key: str) -> ProfileField | None:
    """The stored field `key` names, None for a valid key we do not store, else 400."""
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ServiceError(
            400, "M_KEY_TOO_LARGE", f"Profile keys are at most {MAX_KEY_BYTES} bytes"
        )
    if not _KEY_NAME.fullmatch(key):
        raise ServiceError(400, "M_INVALID_PARAM", "Invalid profile key")
    return next((field for field in FIELDS if field == key), None)


async def get_profile(hs: Homeserver, user_id: str, *, ask_remote: bool = False) -> dict[str, str]:
    """The stored fields of a local user; 404 for users we do not know. With
    `ask_remote` (a client's lookup, never another server's), a remote user's profile
    is asked of their server."""
    server = server_name_of(user_id, "@")
    if ask_remote and server is not None and server != hs.server_name:
        return await _remote_profile(hs, server, user_id)
    if server != hs.server_name:
        raise not_found("Profile not found")
    async with hs.db.pool.connection() as conn:
        row = await profiles.get_profile(conn, user_id)
        if row is None and not await accounts.user_exists(conn, user_id):
            raise not_found("Profile not found")
    values = row or (None, None)
    return {field: value for field, value in zip(FIELDS, values, strict=True) if value}


async def _remote_profile(hs: Homeserver, server: str, user_id: str) -> dict[str, str]:
    """`GET /query/profile` on the user's server; of its answer only the fields we
    know, as strings, are passed on."""
    try:
        answer = await hs.federation_client.get_json(
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
    return {f: v for f in FIELDS if isinstance(v := answer.get(f), str) and v}


async def get_profile_field(
    hs: Homeserver, user_id: str, key: str, *, ask_remote: bool = False
) -> dict[str, str]:
    """{key: value}, or 404 when the user has no such field."""
    field = _check_key(key)
    profile = await get_profile(hs, user_id, ask_remote=ask_remote)
    if field is None or field not in profile:
        raise not_found(f"Profile has no {key}")
    return {field: profile[field]}


def _checked_value(field: ProfileField, value: Any) -> str | None:
    """A value to store; "" clears the field like DELETE does."""
    if not isinstance(value, str):
        raise bad_json(f"{field} must be a string")
    ensure_storable(value, field)
    if len(value) > MAX_LENGTHS[field]:
        raise ServiceError(
            400, "M_INVALID_PARAM", f"{field} is longer than {MAX_LENGTHS[field]} characters"
        )
    if field == "avatar_url" and value and not _MXC_URI.fullmatch(value):
        raise ServiceError(400, "M_INVALID_PARAM", "avatar_url must be an mxc:// URI")
    return value or None


async def set_profile_field(
    hs: Homeserver, requester: Requester, user_id: str, key: str, body: dict[str, Any] | None
) -> dict[str, str]:
    """Set (body {key: value}) or delete (body None) one field of the requester's own
    profile; returns the whole profile as it now is."""
    field = _check_key(key)
    if requester.user_id != user_id:
        raise forbidden("Cannot change the profile of another user")
    if field is None:
        raise forbidden(f"Profile field {key} cannot be changed on this server")
    value = None
    if body is not None:
        if key not in body:
            raise ServiceError(400, "M_MISSING_PARAM", f"Missing {key}")
        value = _checked_value(field, body[key])
    # A profile change is announced in every joined room: as costly as sending messages.
    await hs.ratelimiter.check("message", requester.user_id, requester)
    async with hs.db.pool.connection() as conn:
        row = await profiles.set_profile_field(conn, user_id, field, value)
    profile: dict[str, str] = {
        name: stored for name, stored in zip(FIELDS, row, strict=True) if stored
    }
    await hs.membership.announce_profile(user_id, profile)
    return profile
