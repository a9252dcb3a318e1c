"""`/.well-known/matrix/*`: where clients and servers should reach us."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import json_response, not_found
from homeserver.config.admin import support_contacts

RTC_FOCI = "org.matrix.msc4143.rtc_foci"


async def client(request: web.Request) -> web.Response:
    config = homeserver(request).config
    body: dict[str, Any] = {}
    # Element Call finds its LiveKit service here; the configured transports serve
    # unless the operator's extra content (Synapse's setting) names them itself.
    if config.matrix_rtc_transports:
        body[RTC_FOCI] = config.matrix_rtc_transports
    body.update(config.extra_well_known_client_content)
    body["m.homeserver"] = {"base_url": config.client_base_url}
    return json_response(body)


async def server(request: web.Request) -> web.Response:
    delegated = homeserver(request).config.well_known_server
    if not delegated:
        raise not_found("No server delegation is configured")
    return json_response({"m.server": delegated})


async def support(request: web.Request) -> web.Response:
    """MSC1929 contacts and support page; 404 when the operator configured neither."""
    config = homeserver(request).config
    body: dict[str, Any] = {}
    contacts = support_contacts(config)
    if contacts:
        body["contacts"] = contacts
    if config.support_page:
        body["support_page"] = config.support_page
    if not body:
        raise not_found("No support contacts are configured")
    return json_response(body)


def register(app: web.Application) -> None:
    app.router.add_get("/.well-known/matrix/client", client)
    app.router.add_get("/.well-known/matrix/server", server)
    app.router.add_get("/.well-known/matrix/support", support)
