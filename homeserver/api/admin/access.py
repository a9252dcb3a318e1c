"""What every admin endpoint shares: the admin check (one middleware for every admin
route, so no handler can forget it), the optional JSON body, and the query parameters
admin tools send, refused with Synapse's errors when malformed."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from homeserver.api.auth import REQUESTER_KEY, require_user
from homeserver.api.errors import Handler, forbidden, invalid_param
from homeserver.api.http import read_json_object
from homeserver.services.accounts.auth import Requester

_INTEGER = re.compile(r"[0-9]{1,15}")

ADMIN_PREFIX = "/_synapse/admin/"
# The client API's own admin endpoints (the spec's account suspension and locking).
ADMIN_CLIENT_PREFIXES = ("/_matrix/client/v1/admin/suspend/", "/_matrix/client/v1/admin/lock/")

# Admin-path handlers anyone may call: shared-secret registration (its secret is the
# credential) and the version, as in Synapse.
_PUBLIC: set[Handler] = set()


def public(handler: Handler) -> Handler:
    """Mark an admin-path handler as callable without an admin's token."""
    _PUBLIC.add(handler)
    return handler


def is_admin_path(path: str) -> bool:
    return path.startswith(ADMIN_PREFIX) or path.startswith(ADMIN_CLIENT_PREFIXES)


def is_public(handler: Handler) -> bool:
    return handler in _PUBLIC


@web.middleware
async def admin_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every matched admin route needs a server admin: 401 M_MISSING_TOKEN without a
    token, 403 M_FORBIDDEN for anyone else."""
    match = request.match_info
    if (
        is_admin_path(request.path)
        and match.http_exception is None
        and not is_public(match.handler)
    ):
        requester = await require_user(request)
        if not requester.is_admin:
            raise forbidden("You are not a server admin")
    return await handler(request)


def admin(request: web.Request) -> Requester:
    """The admin making this request, as the middleware authenticated them."""
    requester = request.get(REQUESTER_KEY)
    if not isinstance(requester, Requester) or not requester.is_admin:
        raise forbidden("You are not a server admin")
    return requester


def query_int(request: web.Request, name: str, default: int) -> int:
    """A non-negative integer query parameter (admin tools page with offsets)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise invalid_param(f"Query parameter {name!r} must be a non-negative integer")
    return int(raw)


def query_bool(request: web.Request, name: str, default: bool | None) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise invalid_param(f"Query parameter {name!r} must be true or false")
    return raw == "true"


def query_ascending(request: web.Request) -> bool:
    """`dir`: f (forwards, the default) or b."""
    raw = request.query.get("dir", "f")
    if raw not in ("f", "b"):
        raise invalid_param("Query parameter 'dir' must be f or b")
    return raw == "f"


def query_choice(request: web.Request, name: str, choices: Any, default: str) -> str:
    raw = request.query.get(name, default)
    if raw not in choices:
        raise invalid_param(f"Unknown value for {name!r}: {raw!r}")
    return raw


async def optional_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body, or {} when the request has none (curl users omit it)."""
    if not request.can_read_body:
        return {}
    return await read_json_object(request)
