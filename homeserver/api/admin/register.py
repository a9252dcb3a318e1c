"""Shared-secret registration at Synapse's path: `register_new_matrix_user` and
deployment playbooks create accounts (the first admin among them) through it. Public:
the HMAC over the nonce is the credential."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import public
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object

PATH = "/_synapse/admin/v1/register"


async def get_nonce(request: web.Request) -> web.Response:
    return json_response({"nonce": homeserver(request).shared_secret.new_nonce()})


async def register_user(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return json_response(await homeserver(request).shared_secret.register(body))


def register(app: web.Application) -> None:
    app.router.add_get(PATH, public(get_nonce))
    app.router.add_post(PATH, public(register_user))
