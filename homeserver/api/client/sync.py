"""`GET /sync`: the client's view of everything, then what changed since its token."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import query_of
from homeserver.api.routes import add_client_route
from homeserver.services.core.gc_pause import gc_paused
from homeserver.services.sync.request import SyncRequest, parse_bool, parse_timeout


async def sync(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = query_of(request)
    sync_request = SyncRequest(
        since=query.get("since") or None,
        filter=query.get("filter"),
        full_state=parse_bool(query.get("full_state"), "full_state"),
        timeout_ms=parse_timeout(query.get("timeout")),
        set_presence=query.get("set_presence"),
        use_state_after=parse_bool(query.get("use_state_after"), "use_state_after"),
    )
    # The answer's objects all live until it is written, and are freed by reference
    # counts then: no cycle collection meanwhile (services/core/gc_pause.py; the
    # sync lets go of the pause while it long-polls).
    with gc_paused():
        body = await homeserver(request).sync.sync(requester, sync_request)
        response = json_response(body)
        del body
    return response


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/sync", sync)
