"""Server-side key backup: `/room_keys/version[/{version}]` and `/room_keys/keys[...]`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, bad_json, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


def _version_param(request: web.Request) -> str:
    version = request.query.get("version")
    if version is None:
        raise MatrixError(400, "M_MISSING_PARAM", "version is required")
    return version


def _sessions(body: dict[str, Any], where: str) -> dict[str, Any]:
    sessions = body.get("sessions")
    if not isinstance(sessions, dict):
        raise bad_json(f"{where}sessions must be an object")
    return sessions


async def post_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    return json_response(
        await homeserver(request).key_backup.create_version(requester.user_id, body)
    )


async def get_current_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return json_response(await homeserver(request).key_backup.get_version(requester.user_id, None))


async def get_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    version = request.match_info["version"]
    return json_response(
        await homeserver(request).key_backup.get_version(requester.user_id, version)
    )


async def put_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).key_backup.update_version(
        requester.user_id, request.match_info["version"], body
    )
    return json_response({})


async def delete_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).key_backup.delete_version(
        requester.user_id, request.match_info["version"]
    )
    return json_response({})


def _scope(request: web.Request) -> tuple[str | None, str | None]:
    return request.match_info.get("room_id"), request.match_info.get("session_id")


async def put_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    version = _version_param(request)
    body = await read_json_object(request)
    room_id, session_id = _scope(request)
    rooms: dict[str, Any]
    if room_id is None:
        given = body.get("rooms")
        if not isinstance(given, dict):
            raise bad_json("rooms must be an object")
        rooms = {}
        for room, room_body in given.items():
            if not isinstance(room_body, dict):
                raise bad_json(f"rooms.{room} must be an object")
            rooms[room] = _sessions(room_body, f"rooms.{room}.")
    elif session_id is None:
        rooms = {room_id: _sessions(body, "")}
    else:
        rooms = {room_id: {session_id: body}}
    result = await homeserver(request).key_backup.put_keys(requester.user_id, version, rooms)
    return json_response(result)


async def get_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id, session_id = _scope(request)
    result = await homeserver(request).key_backup.get_keys(
        requester.user_id, _version_param(request), room_id, session_id
    )
    return json_response(result)


async def delete_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id, session_id = _scope(request)
    result = await homeserver(request).key_backup.delete_keys(
        requester.user_id, _version_param(request), room_id, session_id
    )
    return json_response(result)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/room_keys/version", post_version)
    add_client_route(app, "GET", "/room_keys/version", get_current_version)
    add_client_route(app, "GET", "/room_keys/version/{version}", get_version)
    add_client_route(app, "PUT", "/room_keys/version/{version}", put_version)
    add_client_route(app, "DELETE", "/room_keys/version/{version}", delete_version)
    for path in (
        "/room_keys/keys",
        "/room_keys/keys/{room_id}",
        "/room_keys/keys/{room_id}/{session_id}",
    ):
        add_client_route(app, "PUT", path, put_keys)
        add_client_route(app, "GET", path, get_keys)
        add_client_route(app, "DELETE", path, delete_keys)
