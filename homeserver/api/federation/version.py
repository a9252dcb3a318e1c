"""`GET /_matrix/federation/v1/version`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from homeserver.api.errors import json_response

try:
    VERSION = version("homeserver")
except PackageNotFoundError:
    VERSION = "0+unknown"


async def get_version(request: web.Request) -> web.Response:
    return json_response({"server": {"name": "homeserver", "version": VERSION}})


def register(app: web.Application) -> None:
    app.router.add_get("/_matrix/federation/v1/version", get_version)
