"""Registration tokens in the admin API, at Synapse's paths and in its shape
(`/_synapse/admin/v1/registration_tokens`), which admins' tools already speak."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.services.accounts.registration_tokens import DEFAULT_TOKEN_LENGTH

PREFIX = "/_synapse/admin/v1/registration_tokens"


async def list_tokens(request: web.Request) -> web.Response:
    raw = request.query.get("valid")
    if raw not in (None, "true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "valid must be true or false")
    valid = None if raw is None else raw == "true"
    tokens = await homeserver(request).registration_tokens.list_tokens(valid)
    return json_response({"registration_tokens": tokens})


async def create_token(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    created = await homeserver(request).registration_tokens.create_token(
        token=body.get("token"),
        uses_allowed=body.get("uses_allowed"),
        expiry_time=body.get("expiry_time"),
        length=body.get("length", DEFAULT_TOKEN_LENGTH),
    )
    return json_response(created)


async def get_token(request: web.Request) -> web.Response:
    token = await homeserver(request).registration_tokens.get_token(request.match_info["token"])
    return json_response(token)


async def update_token(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    updated = await homeserver(request).registration_tokens.update_token(
        request.match_info["token"], body
    )
    return json_response(updated)


async def delete_token(request: web.Request) -> web.Response:
    await homeserver(request).registration_tokens.delete_token(request.match_info["token"])
    return json_response({})


def register(app: web.Application) -> None:
    app.router.add_get(PREFIX, list_tokens)
    app.router.add_post(f"{PREFIX}/new", create_token)
    app.router.add_get(PREFIX + "/{token}", get_token)
    app.router.add_put(PREFIX + "/{token}", update_token)
    app.router.add_delete(PREFIX + "/{token}", delete_token)
