"""Devices of the requesting user: list, read, rename, delete (re-authenticated)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import bad_json, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import reauthenticate
from homeserver.services.accounts.auth import Requester
from homeserver.services.accounts.devices import MAX_DISPLAY_NAME_LENGTH


async def get_devices(request: web.Request) -> web.Response:
    requester = await require_user(request)
    found = await homeserver(request).devices.list_devices(requester.user_id)
    return json_response({"devices": found})


async def get_device(request: web.Request) -> web.Response:
    requester = await require_user(request)
    device = await homeserver(request).devices.get_device(
        requester.user_id, request.match_info["device_id"]
    )
    return json_response(device)


async def put_device(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    name = body.get("display_name")
    if name is not None and not isinstance(name, str):
        raise bad_json("display_name must be a string")
    if name is not None and len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise bad_json("display_name is too long")
    await homeserver(request).devices.rename_device(
        requester.user_id, request.match_info["device_id"], name
    )
    return json_response({})


async def _read_optional_body(request: web.Request) -> dict[str, Any]:
    """DELETE may come without a body on its first (challenge) round."""
    if not request.body_exists:
        return {}
    return await read_json_object(request)


async def _delete(
    request: web.Request, requester: Requester, body: dict[str, Any], device_ids: list[str]
) -> None:
    """Delete those of `device_ids` that are the requester's, after re-authentication.
    When none is (unknown, or another user's), there is nothing to authorise: the spec's
    200 for a device that "had been removed previously", without a UIA round."""
    hs = homeserver(request)
    mine = await hs.devices.owned(requester.user_id, device_ids)
    if not mine:
        return
    await reauthenticate(request, body, requester)
    await hs.devices.delete_devices(requester.user_id, mine)


async def delete_device(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await _read_optional_body(request)
    await _delete(request, requester, body, [request.match_info["device_id"]])
    return json_response({})


async def post_delete_devices(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    ids = body.get("devices")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_json("devices must be a list of device ids")
    await _delete(request, requester, body, ids)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/devices", get_devices)
    add_client_route(app, "GET", "/devices/{device_id}", get_device)
    add_client_route(app, "PUT", "/devices/{device_id}", put_device)
    add_client_route(app, "DELETE", "/devices/{device_id}", delete_device)
    add_client_route(app, "POST", "/delete_devices", post_delete_devices)
