"""How handlers reach the running homeserver."""

from __future__ import annotations

from aiohttp import web

from homeserver.services.homeserver import Homeserver

HOMESERVER = web.AppKey("homeserver", Homeserver)


def homeserver(request: web.Request) -> Homeserver:
    return request.app[HOMESERVER]
