"""Admin actions in rooms at Synapse's paths: join a user, make a room admin, forward
extremities, server notices; the statistics and task lists admin tools show beside them."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import admin, optional_body
from homeserver.api.context import homeserver
from homeserver.api.errors import invalid_param, json_response
from homeserver.api.http import read_json_object

V1 = "/_synapse/admin/v1"


async def join(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    room_id = await homeserver(request).admin_room_tools.join(
        admin(request), request.match_info["room"], body.get("user_id")
    )
    return json_response({"room_id": room_id})


async def make_room_admin(request: web.Request) -> web.Response:
    body = await optional_body(request)
    await homeserver(request).admin_room_tools.make_room_admin(
        admin(request), request.match_info["room_id"], body.get("user_id")
    )
    return json_response({})


async def get_extremities(request: web.Request) -> web.Response:
    tools = homeserver(request).admin_room_tools
    return json_response(await tools.forward_extremities(request.match_info["room_id"]))


async def delete_extremities(request: web.Request) -> web.Response:
    tools = homeserver(request).admin_room_tools
    return json_response(await tools.delete_forward_extremities(request.match_info["room_id"]))


async def database_rooms(request: web.Request) -> web.Response:
    return json_response(await homeserver(request).admin_room_tools.database_room_sizes())


async def scheduled_tasks(request: web.Request) -> web.Response:
    """Room deletions, history purges and user redactions; filtered as Synapse filters
    (`job_status` is the older name of `status`)."""
    query = request.query
    wanted = {
        field: query[key]
        for key, field in (
            ("action_name", "action"),
            ("resource_id", "resource_id"),
            ("job_status", "status"),
            ("status", "status"),
        )
        if key in query
    }
    raw = query.get("max_timestamp")
    if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise invalid_param("max_timestamp must be a non-negative integer")
    tasks = await homeserver(request).admin_rooms.tasks(wanted, None if raw is None else int(raw))
    return json_response({"scheduled_tasks": tasks})


async def background_updates_status(request: web.Request) -> web.Response:
    """Schema changes run as migrations before the server starts: none is ever pending."""
    return json_response({"enabled": True, "current_updates": {}})


async def background_updates_enabled(request: web.Request) -> web.Response:
    body = await optional_body(request) if request.method == "POST" else {}
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise invalid_param("enabled must be a boolean")
    return json_response({"enabled": True})


async def send_server_notice(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    event_id = await homeserver(request).server_notices.send_notice(
        body, request.match_info.get("txn_id")
    )
    return json_response({"event_id": event_id})


async def purge_history(request: web.Request) -> web.Response:
    body = await optional_body(request)
    purge_id = await homeserver(request).admin_room_tools.start_purge(
        request.match_info["room_id"], request.match_info.get("event_id"), body
    )
    return json_response({"purge_id": purge_id})


async def purge_status(request: web.Request) -> web.Response:
    tools = homeserver(request).admin_room_tools
    return json_response(await tools.purge_status(request.match_info["purge_id"]))


def register(app: web.Application) -> None:
    room = f"{V1}/rooms/{{room_id}}"
    app.router.add_post(f"{V1}/purge_history/{{room_id}}", purge_history)
    app.router.add_post(f"{V1}/purge_history/{{room_id}}/{{event_id}}", purge_history)
    app.router.add_get(f"{V1}/purge_history_status/{{purge_id}}", purge_status)
    app.router.add_post(f"{V1}/send_server_notice", send_server_notice)
    app.router.add_put(f"{V1}/send_server_notice/{{txn_id}}", send_server_notice)
    app.router.add_post(f"{V1}/join/{{room}}", join)
    app.router.add_post(f"{room}/make_room_admin", make_room_admin)
    app.router.add_get(f"{room}/forward_extremities", get_extremities)
    app.router.add_delete(f"{room}/forward_extremities", delete_extremities)
    app.router.add_get(f"{V1}/statistics/database/rooms", database_rooms)
    app.router.add_get(f"{V1}/scheduled_tasks", scheduled_tasks)
    app.router.add_get(f"{V1}/background_updates/status", background_updates_status)
    app.router.add_get(f"{V1}/background_updates/enabled", background_updates_enabled)
    app.router.add_post(f"{V1}/background_updates/enabled", background_updates_enabled)
