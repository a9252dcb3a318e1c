"""`GET /_matrix/federation/v1/openid/userinfo`: the relying party (not a homeserver,
so the request is unsigned) exchanges an OpenID token for the user id it stands for."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response

USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"


async def userinfo(request: web.Request) -> web.Response:
    token = request.query.get("access_token")
    if not token:
        raise MatrixError(401, "M_MISSING_TOKEN", "access_token is required")
    return json_response(await homeserver(request).openid.userinfo(token))


def register(app: web.Application) -> None:
    app.router.add_get(USERINFO_PATH, userinfo)
