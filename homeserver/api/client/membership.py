"""Membership endpoints: join, leave, invite, kick, ban, unban, forget, knock, members."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import RouteHandler, add_client_route
from homeserver.services.accounts.auth import Requester, check_not_suspended
from homeserver.services.core.errors import ServiceError
from homeserver.services.directory.rooms import alias_server
from homeserver.services.homeserver import Homeserver


async def _optional_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    return await read_json_object(request)


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
    return reason


def _target(body: dict[str, Any]) -> str:
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_BAD_JSON", "user_id must be a string")
    return user_id


async def _join(request: web.Request, requester: Requester, room: str) -> web.Response:
    hs = homeserver(request)
    body = await _optional_body(request)
    check_not_suspended(requester)
    await hs.ratelimit.check("join", requester.user_id, requester)
    servers = [*request.query.getall("server_name", []), *request.query.getall("via", [])]
    if room.startswith("#") and alias_server(room) != hs.server_name:
        room_id, alias_servers = await hs.joins.query_alias(room)
        servers += alias_servers
    else:
        room_id = await _resolve_local(hs, room)
    await hs.membership.join(room_id, requester.user_id, _reason(body), servers, body)
    return json_response({"room_id": room_id})


async def _resolve_local(hs: Homeserver, room: str) -> str:
    """A room id, or a local alias; one in an application service's namespace may exist
    once the service is asked (as GET /directory/room does)."""
    try:
        return await hs.membership.resolve_room(room)
    except ServiceError as exc:
        if exc.errcode != "M_NOT_FOUND" or not await hs.appservices_sender.query_alias(room):
            raise
    return await hs.membership.resolve_room(room)


async def join_by_id_or_alias(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return await _join(request, requester, request.match_info["room"])


async def join_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return await _join(request, requester, request.match_info["room_id"])


async def leave(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await _optional_body(request)
    await homeserver(request).membership.leave(
        request.match_info["room_id"], requester.user_id, _reason(body)
    )
    return json_response({})


async def invite(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await read_json_object(request)
    check_not_suspended(requester)
    await hs.ratelimit.check("invite", requester.user_id, requester)
    target = _target(body)
    if requester.shadow_banned:
        return json_response({})  # Told it worked; nobody is invited.
    await hs.appservices_sender.check_invitee(target)
    await hs.membership.invite(
        request.match_info["room_id"], requester.user_id, target, _reason(body)
    )
    return json_response({})


def _moderation(action: str) -> RouteHandler:
    """A handler for kick, ban or unban: the same body, a different membership change."""

    async def handler(request: web.Request) -> web.Response:
        requester = await require_user(request)
        body = await read_json_object(request)
        change = getattr(homeserver(request).membership, action)
        await change(request.match_info["room_id"], requester.user_id, _target(body), _reason(body))
        return json_response({})

    return handler


async def forget(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).membership.forget(request.match_info["room_id"], requester.user_id)
    return json_response({})


async def knock(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await _optional_body(request)
    room_id = await hs.membership.resolve_room(request.match_info["room"])
    servers = [*request.query.getall("server_name", []), *request.query.getall("via", [])]
    await hs.membership.knock(room_id, requester.user_id, _reason(body), servers)
    return json_response({"room_id": room_id})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/join/{room}", join_by_id_or_alias)
    add_client_route(app, "POST", "/rooms/{room_id}/join", join_room)
    add_client_route(app, "POST", "/rooms/{room_id}/leave", leave)
    add_client_route(app, "POST", "/rooms/{room_id}/invite", invite)
    for action in ("kick", "ban", "unban"):
        add_client_route(app, "POST", f"/rooms/{{room_id}}/{action}", _moderation(action))
    add_client_route(app, "POST", "/rooms/{room_id}/forget", forget)
    add_client_route(app, "POST", "/knock/{room}", knock)
