"""Managing delayed events (MSC4140, unstable prefix): list them, and restart, cancel or
send one now, in both forms clients send today (`/{id}/{action}` and `{"action": ...}`).
Scheduling is the `org.matrix.msc4140.delay` query parameter of the send endpoints
(`api/client/send.py`)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, invalid_param, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.rooms.delayed_events import UNSTABLE_FEATURE

DELAY_PARAMS = (f"{UNSTABLE_FEATURE}.delay", "delay")
_MAX_DELAY_DIGITS = 15


def delay_param(request: web.Request) -> int | None:
    """The delay asked for, in milliseconds; None for an event sent now."""
    for name in DELAY_PARAMS:
        raw = request.query.get(name)
        if raw is not None:
            if not raw.isdigit() or len(raw) > _MAX_DELAY_DIGITS:
                raise invalid_param(f"{name} must be a non-negative integer of milliseconds")
            return int(raw)
    return None


async def list_delayed(request: web.Request) -> web.Response:
    requester = await require_user(request)
    events = await homeserver(request).delayed_events.pending(requester)
    return json_response({"delayed_events": events})


async def _update(request: web.Request, action: object) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    if not isinstance(action, str):
        raise MatrixError(400, "M_MISSING_PARAM", "action is required")
    await hs.ratelimit.check("delayed_event_mgmt", requester.user_id, requester)
    await hs.delayed_events.update(requester, request.match_info["delay_id"], action)
    return json_response({})


async def update_with_body(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return await _update(request, body.get("action"))


async def update_with_path(request: web.Request) -> web.Response:
    if request.can_read_body:
        await read_json_object(request)  # an empty object, when there is a body
    return await _update(request, request.match_info["action"])


def register(app: web.Application) -> None:
    versions = (f"unstable/{UNSTABLE_FEATURE}",)
    add_client_route(app, "GET", "/delayed_events", list_delayed, versions)
    add_client_route(app, "POST", "/delayed_events/{delay_id}", update_with_body, versions)
    add_client_route(app, "POST", "/delayed_events/{delay_id}/{action}", update_with_path, versions)
