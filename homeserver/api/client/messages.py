"""Room history: /messages, /context and /timestamp_to_event."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route
from homeserver.services import messages

# Backfill requests one /messages call may make before answering with what it has.
BACKFILL_ROUNDS = 3


async def get_messages(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    query = request.query
    room_id = request.match_info["room_id"]

    async def page() -> dict[str, Any]:
        return await messages.messages(
            hs.db,
            hs.event_cache,
            requester,
            room_id,
            from_token=query.get("from"),
            to_token=query.get("to"),
            direction=query.get("dir"),
            limit=query.get("limit"),
            filter_json=query.get("filter"),
        )

    body = await page()
    # Paging backwards ran out of history: a room joined over federation may have more
    # of it on other servers (the first page already checked the user may read it).
    for _ in range(BACKFILL_ROUNDS):
        if "end" in body or query.get("dir", "b") != "b" or "to" in query:
            break
        if not await hs.backfiller.backfill(room_id):
            break
        body = await page()
    return json_response(body)


async def get_context(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await messages.context(
        hs.db,
        hs.event_cache,
        requester,
        request.match_info["room_id"],
        request.match_info["event_id"],
        limit=request.query.get("limit"),
        filter_json=request.query.get("filter"),
    )
    return json_response(body)


async def timestamp_to_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await messages.timestamp_to_event(
        hs.db,
        hs.event_cache,
        requester,
        request.match_info["room_id"],
        ts=request.query.get("ts"),
        direction=request.query.get("dir"),
    )
    return json_response(body)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/rooms/{room_id}/messages", get_messages)
    add_client_route(app, "GET", "/rooms/{room_id}/context/{event_id}", get_context)
    add_client_route(
        app,
        "GET",
        "/rooms/{room_id}/timestamp_to_event",
        timestamp_to_event,
        versions=("v1",),
    )
