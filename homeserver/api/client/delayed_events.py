"""Managing delayed events (MSC4140, unstable prefix): list them, and restart, cancel or
send one now, in both forms clients send today (`/{id}/{action}` and `{"action": ...}`).
Scheduling is the `org.matrix.msc4140.delay` query parameter of the send endpoints
(`api/client/send.py`)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import access_token, require_user
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


async def update_with_body(request: web.Request) -> web.Response:
    """The older, authenticated form: `{"action": "restart" | "cancel" | "send"}`."""
    requester = await require_user(request)
    hs = homeserver(request)
    action = (await read_json_object(request)).get("action")
    if not isinstance(action, str):
        raise MatrixError(400, "M_MISSING_PARAM", "action is required")
    await hs.ratelimit.check("delayed_event_mgmt", requester.user_id, requester)
    await hs.delayed_events.update(requester.user_id, request.match_info["delay_id"], action)
    return json_response({})


async def update_with_path(request: web.Request) -> web.Response:
    """`/{delay_id}/{action}`: with an access token, only the user's own delayed events;
    without one, the delay id alone is the credential (as in the MSC, so a client can
    hand it to a service that keeps the delay running for it)."""
    hs = homeserver(request)
    owner = None
    if access_token(request) is not None:
        requester = await require_user(request)
        owner = requester.user_id
        await hs.ratelimit.check("delayed_event_mgmt", owner, requester)
    else:
        await hs.ratelimit.check("delayed_event_mgmt", request.remote or "-")
    if request.can_read_body:
        await read_json_object(request)  # an empty object, when there is a body
    await hs.delayed_events.update(
        owner, request.match_info["delay_id"], request.match_info["action"]
    )
    return json_response({})


def register(app: web.Application) -> None:
    versions = (f"unstable/{UNSTABLE_FEATURE}",)
    add_client_route(app, "GET", "/delayed_events", list_delayed, versions)
    add_client_route(app, "POST", "/delayed_events/{delay_id}", update_with_body, versions)
    add_client_route(app, "POST", "/delayed_events/{delay_id}/{action}", update_with_path, versions)
