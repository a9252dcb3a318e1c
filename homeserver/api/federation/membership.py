"""Joins, leaves, knocks and invites from other servers: make_join/send_join,
make_leave/send_leave, make_knock/send_knock, and invite (v2, and v1 for older servers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.federation.auth import require_server
from homeserver.api.http import read_json_object
from homeserver.services.timeline.pagination import parse_bool

Handler = Callable[[web.Request], Awaitable[web.Response]]
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def _maker(membership: str, versioned: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        origin = await require_server(request)
        versions = request.query.getall("ver", []) if versioned else None
        if membership == "join" and not versions:
            versions = ["1"]  # the spec's default when none are given
        answer = await homeserver(request).resident.make(
            origin,
            request.match_info["room_id"],
            request.match_info["user_id"],
            membership,
            list(versions) if versions is not None else None,
        )
        return json_response(answer)

    return handler


def _sender(membership: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        origin = await require_server(request)
        pdu = await read_json_object(request)
        omit = membership == "join" and parse_bool(
            request.query.get("omit_members"), "omit_members"
        )
        answer = await homeserver(request).resident.send(
            origin,
            request.match_info["room_id"],
            request.match_info["event_id"],
            pdu,
            membership,
            omit_members=omit,
        )
        return json_response(answer)

    return handler


async def invite(request: web.Request) -> web.Response:
    origin = await require_server(request)
    body = await read_json_object(request)
    answer = await homeserver(request).resident.invite(
        origin, request.match_info["room_id"], request.match_info["event_id"], body
    )
    return json_response(answer)


async def invite_v1(request: web.Request) -> web.Response:
    """The old invite: the body is the event itself, for room versions 1 and 2 only (the
    event's format is that of version 1, its own id inside), and the answer is wrapped
    in `[200, ...]`."""
    origin = await require_server(request)
    pdu = await read_json_object(request)
    answer = await homeserver(request).resident.invite(
        origin,
        request.match_info["room_id"],
        request.match_info["event_id"],
        {"room_version": "1", "event": pdu},
    )
    return json_response([200, answer])


def register(app: web.Application) -> None:
    for membership, versioned in (("join", True), ("leave", False), ("knock", True)):
        app.router.add_get(
            f"{V1}/make_{membership}/{{room_id}}/{{user_id}}", _maker(membership, versioned)
        )
        app.router.add_put(f"{V2}/send_{membership}/{{room_id}}/{{event_id}}", _sender(membership))
    app.router.add_put(f"{V1}/send_knock/{{room_id}}/{{event_id}}", _sender("knock"))
    app.router.add_put(f"{V2}/invite/{{room_id}}/{{event_id}}", invite)
    app.router.add_put(f"{V1}/invite/{{room_id}}/{{event_id}}", invite_v1)
