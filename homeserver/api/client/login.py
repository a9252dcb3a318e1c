"""Logging in: `GET/POST /login`, `POST /refresh`, and login tokens for signing
in another device (`POST /v1/login/get_token`)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import access_token, require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import reauthenticate
from homeserver.services.accounts.login import LOGIN_PASSWORD, LOGIN_TOKEN
from homeserver.services.appservices import registry as appservices


async def get_login(request: web.Request) -> web.Response:
    hs = homeserver(request)
    flows: list[dict[str, object]] = [
        {"type": LOGIN_PASSWORD},
        {"type": LOGIN_TOKEN, "get_login_token": True},
    ]
    if hs.sso.enabled:
        flows.append({"type": "m.login.sso", "identity_providers": hs.sso.identity_providers()})
    if hs.appservices_registry.services:
        flows.append({"type": appservices.LOGIN_TYPE})
    return json_response({"flows": flows})


async def post_login(request: web.Request) -> web.Response:
    hs = homeserver(request)
    body = await read_json_object(request)
    if body.get("type") == appservices.LOGIN_TYPE:
        token = access_token(request)
        service = hs.appservices_registry.by_token.get(token) if token else None
        if service is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Not an application service's token")
        return json_response(await hs.appservices_auth.login_as(service, body))
    await hs.ratelimit.check("login", request.remote or "-")
    return json_response(await hs.login.login(body))


async def post_refresh(request: web.Request) -> web.Response:
    hs = homeserver(request)
    body = await read_json_object(request)
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise MatrixError(400, "M_BAD_JSON", "refresh_token must be a non-empty string")
    return json_response(await hs.login.refresh(token))


async def post_get_token(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await reauthenticate(request, body, requester)
    return json_response(await homeserver(request).login.create_login_token(requester.user_id))


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/login", get_login)
    add_client_route(app, "POST", "/login", post_login)
    add_client_route(app, "POST", "/refresh", post_refresh, versions=("v3", "v1"))
    add_client_route(app, "POST", "/login/get_token", post_get_token, versions=("v1",))
