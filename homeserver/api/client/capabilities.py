"""`GET /capabilities`: what this server lets the requesting user do."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route
from homeserver.services.rooms.delayed_events import UNSTABLE_FEATURE as DELAYED_EVENTS


def capabilities(
    default_room_version: str, max_delay_ms: int, threepid_changes: bool = False
) -> dict[str, Any]:
    return {
        "m.change_password": {"enabled": True},
        "m.room_versions": {
            "default": default_room_version,
            "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
        },
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        # No `allowed` list: every profile field the spec's key grammar admits.
        "m.profile_fields": {"enabled": True},
        # Adding needs mail to validate with; removing alone is not worth announcing.
        "m.3pid_changes": {"enabled": threepid_changes},
        "m.get_login_token": {"enabled": True},
        # MSC4140's longest delay; clients also learn it from the error of a longer one.
        DELAYED_EVENTS: {"enabled": max_delay_ms > 0, "max_delay": max_delay_ms},
    }


async def get_capabilities(request: web.Request) -> web.Response:
    await require_user(request)
    hs = homeserver(request)
    found = capabilities(
        hs.config.default_room_version, hs.delayed_events.max_delay_ms, hs.threepids.can_change
    )
    return json_response({"capabilities": found})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/capabilities", get_capabilities)
