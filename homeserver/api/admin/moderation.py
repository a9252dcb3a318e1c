"""Account moderation in the admin API, at Synapse's paths and in its shapes: shadow
bans, suspension (also the spec's `/_matrix/client/v1/admin/suspend`), locks (also
`/_matrix/client/v1/admin/lock`), rate-limit overrides, the admin flag, logging in as a
user, and what admin tools read of an account (memberships, account data, pushers)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.admin.access import admin, optional_body
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, invalid_param, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route

V1 = "/_synapse/admin/v1"


def _user(request: web.Request) -> str:
    return request.match_info["user_id"]


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key}")
    if not isinstance(value, bool):
        raise invalid_param(f"{key} must be a boolean")
    return value


async def shadow_ban(request: web.Request) -> web.Response:
    value = request.method == "POST"
    await homeserver(request).admin_moderation.set_flag(_user(request), "shadow_banned", value)
    return json_response({})


async def synapse_suspend(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    user_id = _user(request)
    value = _bool(body, "suspend")
    await homeserver(request).admin_moderation.set_flag(user_id, "suspended", value)
    return json_response({f"user_{user_id}_suspended": value})


async def spec_get_suspended(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_moderation.get_flag(_user(request), "suspended")
    return json_response({"suspended": found})


async def spec_put_suspended(request: web.Request) -> web.Response:
    value = _bool(await read_json_object(request), "suspended")
    await homeserver(request).admin_moderation.set_flag(_user(request), "suspended", value)
    return json_response({"suspended": value})


async def spec_get_locked(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_moderation.get_flag(_user(request), "locked")
    return json_response({"locked": found})


async def spec_put_locked(request: web.Request) -> web.Response:
    value = _bool(await read_json_object(request), "locked")
    await homeserver(request).admin_moderation.set_flag(_user(request), "locked", value)
    return json_response({"locked": value})


async def get_admin(request: web.Request) -> web.Response:
    user = await homeserver(request).admin_users.get_user(_user(request))
    return json_response({"admin": user["admin"]})


async def put_admin(request: web.Request) -> web.Response:
    value = _bool(await read_json_object(request), "admin")
    await homeserver(request).admin_moderation.set_admin(admin(request), _user(request), value)
    return json_response({})


async def get_override(request: web.Request) -> web.Response:
    return json_response(await homeserver(request).admin_moderation.get_override(_user(request)))


async def set_override(request: web.Request) -> web.Response:
    body = await optional_body(request)
    return json_response(
        await homeserver(request).admin_moderation.set_override(_user(request), body)
    )


async def delete_override(request: web.Request) -> web.Response:
    await homeserver(request).admin_moderation.delete_override(_user(request))
    return json_response({})


async def login_as(request: web.Request) -> web.Response:
    body = await optional_body(request)
    valid_until = body.get("valid_until_ms")
    if valid_until is not None and (not isinstance(valid_until, int) or valid_until < 0):
        raise invalid_param("valid_until_ms must be a timestamp in milliseconds")
    return json_response(
        await homeserver(request).admin_moderation.login_as(
            admin(request), _user(request), valid_until
        )
    )


async def memberships(request: web.Request) -> web.Response:
    return json_response(await homeserver(request).admin_moderation.memberships(_user(request)))


async def account_data(request: web.Request) -> web.Response:
    return json_response(await homeserver(request).admin_moderation.account_data(_user(request)))


async def pushers(request: web.Request) -> web.Response:
    return json_response(await homeserver(request).admin_moderation.pushers(_user(request)))


def register(app: web.Application) -> None:
    user = f"{V1}/users/{{user_id}}"
    app.router.add_post(f"{user}/shadow_ban", shadow_ban)
    app.router.add_delete(f"{user}/shadow_ban", shadow_ban)
    app.router.add_put(f"{V1}/suspend/{{user_id}}", synapse_suspend)
    app.router.add_get(f"{user}/admin", get_admin)
    app.router.add_put(f"{user}/admin", put_admin)
    app.router.add_get(f"{user}/override_ratelimit", get_override)
    app.router.add_post(f"{user}/override_ratelimit", set_override)
    app.router.add_delete(f"{user}/override_ratelimit", delete_override)
    app.router.add_post(f"{user}/login", login_as)
    app.router.add_get(f"{user}/memberships", memberships)
    app.router.add_get(f"{user}/accountdata", account_data)
    app.router.add_get(f"{user}/pushers", pushers)
    add_client_route(app, "GET", "/admin/suspend/{user_id}", spec_get_suspended, ("v1",))
    add_client_route(app, "PUT", "/admin/suspend/{user_id}", spec_put_suspended, ("v1",))
    add_client_route(app, "GET", "/admin/lock/{user_id}", spec_get_locked, ("v1",))
    add_client_route(app, "PUT", "/admin/lock/{user_id}", spec_put_locked, ("v1",))
