"""`POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified
sliding sync (MSC4186), the sync Element X speaks."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import query_of, read_json_object, release_body
from homeserver.api.routes import CLIENT_PREFIX
from homeserver.services.sliding_sync.request import parse_request
from homeserver.services.sync.request import parse_timeout

PATH = f"{CLIENT_PREFIX}/unstable/org.matrix.simplified_msc3575/sync"


async def sliding_sync(request: web.Request) -> web.Response:
    requester = await require_user(request)
    parsed = parse_request(await read_json_object(request), *_position_and_timeout(request))
    # A held long-poll keeps only the parsed request.
    release_body(request)
    return json_response(await homeserver(request).sliding_sync.sync(requester, parsed))


def _position_and_timeout(request: web.Request) -> tuple[str | None, int]:
    """`pos` and `timeout` (a function: the query read is not kept in the frame of a
    held long-poll)."""
    query = query_of(request)
    return query.get("pos") or None, parse_timeout(query.get("timeout"))


def register(app: web.Application) -> None:
    app.router.add_post(PATH, sliding_sync)
