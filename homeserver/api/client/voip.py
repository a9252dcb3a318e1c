"""Calls: TURN credentials (`/voip/turnServer`) and the MatrixRTC transports a client
may use (MSC4143, unstable prefix)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route

RTC_PREFIX = "unstable/org.matrix.msc4143"


async def turn_server(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return json_response(homeserver(request).turn.credentials(requester))


async def rtc_transports(request: web.Request) -> web.Response:
    await require_user(request)
    transports = homeserver(request).config.matrix_rtc_transports
    return json_response({"rtc_transports": transports})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/voip/turnServer", turn_server)
    add_client_route(app, "GET", "/rtc/transports", rtc_transports, (RTC_PREFIX,))
