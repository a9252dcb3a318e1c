"""Accounts in the admin API, at Synapse's paths and in its shapes, so operators'
tools (synapse-admin, scripts written against Synapse) manage this server as is."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import (
    admin,
    optional_body,
    query_ascending,
    query_bool,
    query_choice,
    query_int,
)
from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.admin import users as admin_users

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
V3 = "/_synapse/admin/v3"


async def list_users(request: web.Request) -> web.Response:
    """v2: `deactivated=true` adds deactivated accounts; v3: it shows only them, and
    without it both kinds are listed."""
    v3 = request.path.startswith(V3)
    deactivated = query_bool(request, "deactivated", None)
    listing = admin_users.UserListing(
        name=request.query.get("name"),
        user_id=request.query.get("user_id"),
        include_guests=bool(query_bool(request, "guests", True)),
        include_deactivated=v3 or bool(deactivated),
        deactivated=deactivated if v3 else None,
        admins=query_bool(request, "admins", None),
        order_by=query_choice(request, "order_by", admin_users.ORDER_BY, "name"),
        ascending=query_ascending(request),
        offset=query_int(request, "from", 0),
        limit=query_int(request, "limit", 100),
    )
    return json_response(await homeserver(request).admin_users.list_users(listing))


async def get_user(request: web.Request) -> web.Response:
    user = await homeserver(request).admin_users.get_user(request.match_info["user_id"])
    return json_response(user)


async def put_user(request: web.Request) -> web.Response:
    requester = admin(request)
    body = await read_json_object(request)
    created, user = await homeserver(request).admin_users.upsert_user(
        requester, request.match_info["user_id"], body
    )
    return json_response(user, status=201 if created else 200)


async def reset_password(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    new_password = body.get("new_password")
    if new_password is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing new_password")
    if not isinstance(new_password, str):
        raise MatrixError(400, "M_INVALID_PARAM", "new_password must be a string")
    logout_devices = body.get("logout_devices", True)
    if not isinstance(logout_devices, bool):
        raise MatrixError(400, "M_INVALID_PARAM", "logout_devices must be a boolean")
    await homeserver(request).admin_users.reset_password(
        request.match_info["user_id"],
        new_password,
        logout_devices=logout_devices,
    )
    return json_response({})


async def deactivate(request: web.Request) -> web.Response:
    body = await optional_body(request)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError(400, "M_INVALID_PARAM", "erase must be a boolean")
    await homeserver(request).admin_users.deactivate(request.match_info["user_id"], erase=erase)
    # No identity server ever held this server's users' third-party ids.
    return json_response({"id_server_unbind_result": "success"})


async def joined_rooms(request: web.Request) -> web.Response:
    rooms = await homeserver(request).admin_users.joined_rooms(request.match_info["user_id"])
    return json_response(rooms)


async def list_devices(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_users.list_devices(request.match_info["user_id"])
    return json_response(found)


async def get_device(request: web.Request) -> web.Response:
    device = await homeserver(request).admin_users.get_device(
        request.match_info["user_id"], request.match_info["device_id"]
    )
    return json_response(device)


async def delete_device(request: web.Request) -> web.Response:
    await homeserver(request).admin_users.delete_device(
        request.match_info["user_id"], request.match_info["device_id"]
    )
    return json_response({})


async def create_device(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    await homeserver(request).admin_users.create_device(
        request.match_info["user_id"], body.get("device_id")
    )
    return json_response({})


async def update_device(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    await homeserver(request).admin_users.rename_device(
        request.match_info["user_id"], request.match_info["device_id"], body.get("display_name")
    )
    return json_response({})


async def delete_devices(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    await homeserver(request).admin_users.delete_devices(
        request.match_info["user_id"], body.get("devices")
    )
    return json_response({})


async def username_available(request: web.Request) -> web.Response:
    """As the client API's /register/available, even with registration closed."""
    username = request.query.get("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
    await homeserver(request).registration.check_available(username)
    return json_response({"available": True})


async def search_users(request: web.Request) -> web.Response:
    """Synapse's older `GET /_synapse/admin/v1/search_users/{userId}?term=` (the path's
    user only has to be local), which scripts still call; v2 `users?name=` supersedes it."""
    term = request.query.get("term")
    if term is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing term")
    found = await homeserver(request).admin_users.search_users(request.match_info["user_id"], term)
    return json_response(found)


async def admin_whois(request: web.Request) -> web.Response:
    requester = admin(request)
    found = await homeserver(request).admin_users.whois(
        requester, request.match_info["user_id"], by_device=False
    )
    return json_response(found)


async def client_whois(request: web.Request) -> web.Response:
    """The client API's whois: admins about anyone, users about themselves."""
    requester = await require_user(request)
    found = await homeserver(request).admin_users.whois(requester, request.match_info["user_id"])
    return json_response(found)


async def user_by_threepid(request: web.Request) -> web.Response:
    """Synapse's `GET /_synapse/admin/v1/threepid/{medium}/users/{address}`."""
    user_id = await homeserver(request).threepids.owner_of(
        request.match_info["medium"], request.match_info["address"]
    )
    if user_id is None:
        raise MatrixError(404, "M_NOT_FOUND", "User not found")
    return json_response({"user_id": user_id})


async def user_by_external_id(request: web.Request) -> web.Response:
    """Synapse's `GET /_synapse/admin/v1/auth_providers/{provider}/users/{externalId}`."""
    admin(request)
    user_id = await homeserver(request).admin_users.user_for_external_id(
        request.match_info["provider"], request.match_info["external_id"]
    )
    return json_response({"user_id": user_id})


async def allow_cross_signing_replacement(request: web.Request) -> web.Response:
    """Synapse's `_allow_cross_signing_replacement_without_uia`: 404 for a user without
    a master key (an unknown user has none)."""
    until = await homeserver(request).cross_signing.allow_replacement_without_uia(
        request.match_info["user_id"]
    )
    return json_response({"updatable_without_uia_before_ms": until})


def register(app: web.Application) -> None:
    user = "/users/{user_id}"
    app.router.add_get(f"{V2}/users", list_users)
    app.router.add_get(f"{V3}/users", list_users)
    app.router.add_post(f"{V2}{user}/devices", create_device)
    app.router.add_put(f"{V2}{user}/devices/{{device_id}}", update_device)
    app.router.add_post(f"{V2}{user}/delete_devices", delete_devices)
    app.router.add_get(f"{V1}/username_available", username_available)
    app.router.add_get(f"{V1}/search_users/{{user_id}}", search_users)
    app.router.add_get(f"{V2}{user}", get_user)
    app.router.add_put(f"{V2}{user}", put_user)
    app.router.add_post(f"{V1}/reset_password/{{user_id}}", reset_password)
    app.router.add_post(f"{V1}/deactivate/{{user_id}}", deactivate)
    app.router.add_get(f"{V1}{user}/joined_rooms", joined_rooms)
    app.router.add_get(f"{V2}{user}/devices", list_devices)
    app.router.add_get(f"{V2}{user}/devices/{{device_id}}", get_device)
    app.router.add_delete(f"{V2}{user}/devices/{{device_id}}", delete_device)
    app.router.add_post(
        f"{V1}{user}/_allow_cross_signing_replacement_without_uia",
        allow_cross_signing_replacement,
    )
    app.router.add_get(f"{V1}/whois/{{user_id}}", admin_whois)
    app.router.add_get(f"{V1}/threepid/{{medium}}/users/{{address}}", user_by_threepid)
    app.router.add_get(
        f"{V1}/auth_providers/{{provider}}/users/{{external_id}}", user_by_external_id
    )
    add_client_route(app, "GET", "/admin/whois/{user_id}", client_whois)
