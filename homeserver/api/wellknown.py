"""`/.well-known/matrix/*`: where clients and servers should reach us."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import json_response, not_found


async def client(request: web.Request) -> web.Response:
    base_url = homeserver(request).config.client_base_url
    return json_response({"m.homeserver": {"base_url": base_url}})


async def server(request: web.Request) -> web.Response:
    delegated = homeserver(request).config.well_known_server
    if not delegated:
        raise not_found("No server delegation is configured")
    return json_response({"m.server": delegated})


def register(app: web.Application) -> None:
    app.router.add_get("/.well-known/matrix/client", client)
    app.router.add_get("/.well-known/matrix/server", server)
