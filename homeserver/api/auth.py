"""Authenticating client requests: the access token from the header or the query."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError
from homeserver.api.http import USER_KEY
from homeserver.services.accounts.auth import AuthFailure, Requester

REQUESTER_KEY = web.RequestKey("requester", Requester)


def access_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header is not a Bearer token")
        return value.strip()
    return request.query.get("access_token")


async def require_user(request: web.Request) -> Requester:
    """The authenticated requester, or the spec's 401."""
    cached = request.get(REQUESTER_KEY)
    if isinstance(cached, Requester):
        return cached
    token = access_token(request)
    if not token:
        raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
    hs = homeserver(request)
    service = (
        hs.appservices_registry.by_token.get(token) if hs.appservices_registry.by_token else None
    )
    if service is not None:
        # An application service, as its sender or the user it asserts (`user_id`).
        requester = await hs.appservices_auth.requester(
            service, request.query.get("user_id"), request.query.get("device_id")
        )
        request[REQUESTER_KEY] = requester
        request[USER_KEY] = requester.user_id
        return requester
    try:
        requester = await hs.accounts_auth.authenticate(token)
    except AuthFailure as exc:
        raise MatrixError(401, exc.errcode, str(exc), soft_logout=exc.soft_logout) from None
    await hs.devices.record_seen(requester, request.remote, request.headers.get("User-Agent"))
    request[REQUESTER_KEY] = requester
    request[USER_KEY] = requester.user_id
    return requester
