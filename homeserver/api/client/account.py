"""The account itself: whoami, password change, deactivation, and the
third-party-id endpoints, answered honestly since this server stores no 3pids."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, bad_json, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import reauthenticate

NO_IDENTITY_SERVER = {"id_server_unbind_result": "no-support"}


async def get_whoami(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return json_response(
        {
            "user_id": requester.user_id,
            "device_id": requester.device_id,
            "is_guest": requester.is_guest,
        }
    )


async def post_password(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    new_password = body.get("new_password")
    if not isinstance(new_password, str):
        raise bad_json("new_password must be a string")
    logout_devices = body.get("logout_devices", True)
    if not isinstance(logout_devices, bool):
        raise bad_json("logout_devices must be a boolean")
    await reauthenticate(request, body, requester)
    hs = homeserver(request)
    await hs.accounts.change_password(requester.user_id, new_password)
    if logout_devices:
        await hs.devices.delete_other_sessions(requester)
    return json_response({})


async def post_deactivate(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise bad_json("erase must be a boolean")
    await reauthenticate(request, body, requester)
    hs = homeserver(request)
    await hs.deactivation.deactivate(requester.user_id, erase=erase)
    return json_response(NO_IDENTITY_SERVER)


async def get_threepids(request: web.Request) -> web.Response:
    await require_user(request)
    return json_response({"threepids": []})


async def post_threepid_request_token(request: web.Request) -> web.Response:
    await require_user(request)
    await read_json_object(request)
    raise MatrixError(
        400,
        "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        "This server does not support adding third-party identifiers",
    )


async def post_password_request_token(request: web.Request) -> web.Response:
    """Password reset by email or phone: no account has an address to reset through."""
    await read_json_object(request)
    raise MatrixError(
        400, "M_THREEPID_NOT_FOUND", "No account on this server has this third-party identifier"
    )


async def post_threepid_add(request: web.Request) -> web.Response:
    """Adding needs a validated session from requestToken, which is never issued."""
    await require_user(request)
    body = await read_json_object(request)
    if not isinstance(body.get("sid"), str) or not isinstance(body.get("client_secret"), str):
        raise bad_json("sid and client_secret must be strings")
    raise MatrixError(400, "M_THREEPID_AUTH_FAILED", "No validated third-party id session")


async def post_threepid_bind(request: web.Request) -> web.Response:
    """Binding goes through an identity server; this server trusts none."""
    await require_user(request)
    await read_json_object(request)
    raise MatrixError(400, "M_SERVER_NOT_TRUSTED", "This server does not use identity servers")


async def post_threepid_remove(request: web.Request) -> web.Response:
    """unbind and delete: there is nothing bound or stored to remove."""
    await require_user(request)
    body = await read_json_object(request)
    if not isinstance(body.get("medium"), str) or not isinstance(body.get("address"), str):
        raise bad_json("medium and address must be strings")
    return json_response(NO_IDENTITY_SERVER)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/account/whoami", get_whoami)
    add_client_route(app, "POST", "/account/password", post_password)
    add_client_route(app, "POST", "/account/deactivate", post_deactivate)
    add_client_route(app, "GET", "/account/3pid", get_threepids)
    add_client_route(app, "POST", "/account/3pid", post_threepid_bind)
    add_client_route(app, "POST", "/account/3pid/add", post_threepid_add)
    add_client_route(app, "POST", "/account/3pid/bind", post_threepid_bind)
    add_client_route(app, "POST", "/account/3pid/unbind", post_threepid_remove)
    add_client_route(app, "POST", "/account/3pid/delete", post_threepid_remove)
    for medium in ("email", "msisdn"):
        add_client_route(
            app, "POST", f"/account/3pid/{medium}/requestToken", post_threepid_request_token
        )
        add_client_route(
            app, "POST", f"/account/password/{medium}/requestToken", post_password_request_token
        )
