"""The account itself: whoami, password change (and reset by email), deactivation,
and its email addresses (`/account/3pid...`). Phone numbers and identity servers are
not supported, and say so."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import access_token, require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, bad_json, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import UiaChallenge, reauthenticate
from homeserver.services.accounts import uia
from homeserver.services.email.templates import Purpose

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
    body = await read_json_object(request)
    new_password = body.get("new_password")
    if not isinstance(new_password, str):
        raise bad_json("new_password must be a string")
    logout_devices = body.get("logout_devices", True)
    if not isinstance(logout_devices, bool):
        raise bad_json("logout_devices must be a boolean")
    hs = homeserver(request)
    if access_token(request) is None and hs.validation.enabled:
        user_id = await _user_proving_email(request, body)
        await hs.accounts.change_password(user_id, new_password)
        if logout_devices:  # every device, and the pushers their tokens set
            devices = await hs.devices.list_devices(user_id)
            await hs.devices.delete_devices(user_id, [d["device_id"] for d in devices])
        return json_response({})
    requester = await require_user(request)
    await reauthenticate(request, body, requester)
    await hs.accounts.change_password(requester.user_id, new_password)
    if logout_devices:
        await hs.devices.delete_other_sessions(requester)
    return json_response({})


async def _user_proving_email(request: web.Request, body: dict[str, object]) -> str:
    """A forgotten password: whoever proves they read an account's email address (the
    link of /account/password/email/requestToken) acts for that account."""
    hs = homeserver(request)
    challenge = uia.Challenge(
        flows=[[uia.EMAIL_IDENTITY]], request_key=uia.request_key(request.method, request.path)
    )
    try:
        data = await hs.uia.authenticate(challenge, body.get("auth"))
    except uia.AuthIncomplete as exc:
        raise UiaChallenge(exc.body) from None
    user_id = await hs.threepids.owner_of_email(data["threepid"]["address"])
    if user_id is None:
        raise MatrixError(404, "M_NOT_FOUND", "Email address not found")
    return user_id


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
    requester = await require_user(request)
    threepids = await homeserver(request).threepids.list(requester.user_id)
    return json_response({"threepids": threepids})


async def post_threepid_request_token(request: web.Request) -> web.Response:
    """A link to prove an address before adding it (email only, when mail is set up)."""
    await require_user(request)
    body = await read_json_object(request)
    hs = homeserver(request)
    if not request.path.endswith("/email/requestToken") or not hs.validation.enabled:
        raise MatrixError(
            400,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            "This server does not support adding this kind of third-party identifier",
        )
    hs.threepids.check_changes_allowed()
    sid = await hs.validation.request_token(Purpose.ADD_THREEPID, body, request.remote or "-")
    return json_response(sid)


async def post_password_request_token(request: web.Request) -> web.Response:
    """A password-reset link, mailed only if an account has the address; the answer is
    the same either way (services/threepids/validation.py says why)."""
    body = await read_json_object(request)
    hs = homeserver(request)
    if not request.path.endswith("/email/requestToken") or not hs.validation.enabled:
        raise MatrixError(
            400,
            "M_THREEPID_NOT_FOUND",
            "No account on this server has this third-party identifier",
        )
    sid = await hs.validation.request_token(Purpose.PASSWORD_RESET, body, request.remote or "-")
    return json_response(sid)


async def post_threepid_add(request: web.Request) -> web.Response:
    """Add the address a validated session proves, after user-interactive auth."""
    requester = await require_user(request)
    body = await read_json_object(request)
    if not isinstance(body.get("sid"), str) or not isinstance(body.get("client_secret"), str):
        raise bad_json("sid and client_secret must be strings")
    hs = homeserver(request)
    if not hs.validation.enabled:
        raise MatrixError(400, "M_THREEPID_AUTH_FAILED", "No validated 3pid session found")
    hs.threepids.check_changes_allowed()
    await reauthenticate(request, body, requester)
    await hs.threepids.add(requester.user_id, body)
    return json_response({})


async def post_threepid_bind(request: web.Request) -> web.Response:
    """Binding goes through an identity server; this server trusts none."""
    await require_user(request)
    await read_json_object(request)
    raise MatrixError(400, "M_SERVER_NOT_TRUSTED", "This server does not use identity servers")


async def post_threepid_unbind(request: web.Request) -> web.Response:
    """Nothing is ever bound to an identity server: nothing to unbind."""
    await require_user(request)
    body = await read_json_object(request)
    if not isinstance(body.get("medium"), str) or not isinstance(body.get("address"), str):
        raise bad_json("medium and address must be strings")
    return json_response(NO_IDENTITY_SERVER)


async def post_threepid_delete(request: web.Request) -> web.Response:
    """Remove an address from the account (and its email pusher)."""
    requester = await require_user(request)
    body = await read_json_object(request)
    if not isinstance(body.get("medium"), str) or not isinstance(body.get("address"), str):
        raise bad_json("medium and address must be strings")
    await homeserver(request).threepids.delete(requester.user_id, body["medium"], body["address"])
    return json_response(NO_IDENTITY_SERVER)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/account/whoami", get_whoami)
    add_client_route(app, "POST", "/account/password", post_password)
    add_client_route(app, "POST", "/account/deactivate", post_deactivate)
    add_client_route(app, "GET", "/account/3pid", get_threepids)
    add_client_route(app, "POST", "/account/3pid", post_threepid_bind)
    add_client_route(app, "POST", "/account/3pid/add", post_threepid_add)
    add_client_route(app, "POST", "/account/3pid/bind", post_threepid_bind)
    add_client_route(app, "POST", "/account/3pid/unbind", post_threepid_unbind)
    add_client_route(app, "POST", "/account/3pid/delete", post_threepid_delete)
    for medium in ("email", "msisdn"):
        add_client_route(
            app, "POST", f"/account/3pid/{medium}/requestToken", post_threepid_request_token
        )
        add_client_route(
            app, "POST", f"/account/password/{medium}/requestToken", post_password_request_token
        )
