"""Registration: `POST /register`, username availability, registration token
validity, and the email validation a registration may ask for (phone numbers are not
offered)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import access_token
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import UiaChallenge
from homeserver.services.accounts import uia
from homeserver.services.accounts.registration import user_id_for
from homeserver.services.appservices import registry as appservices
from homeserver.services.email.templates import Purpose


async def post_register(request: web.Request) -> web.Response:
    hs = homeserver(request)
    body = await read_json_object(request)
    if hs.appservices_registry.services:
        auth = body.get("auth")
        kind = auth.get("type") if isinstance(auth, dict) else body.get("type")
        if kind == appservices.LOGIN_TYPE:
            token = access_token(request)
            service = hs.appservices_registry.by_token.get(token) if token else None
            if service is None:
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Not an application service's token")
            return json_response(await hs.appservices_auth.register_user_for(service, body))
        _check_not_exclusive(request, body.get("username"))
    await hs.ratelimit.check("registration", request.remote or "-")
    key = uia.request_key(request.method, request.path)
    try:
        response = await hs.registration.register(body, request.query.get("kind", "user"), key)
    except uia.AuthIncomplete as exc:
        raise UiaChallenge(exc.body) from None
    return json_response(response)


def _check_not_exclusive(request: web.Request, username: object) -> None:
    """Ordinary users cannot take ids an application service reserves (M_EXCLUSIVE)."""
    hs = homeserver(request)
    if isinstance(username, str) and hs.appservices_registry.services:
        user_id = user_id_for(username, hs.server_name)
        hs.appservices_registry.check_user_id_free(user_id, None)


async def get_available(request: web.Request) -> web.Response:
    username = request.query.get("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
    hs = homeserver(request)
    _check_not_exclusive(request, username)
    await hs.registration.check_available(username)
    return json_response({"available": True})


async def get_token_validity(request: web.Request) -> web.Response:
    token = request.query.get("token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing token")
    hs = homeserver(request)
    return json_response({"valid": await hs.registration.token_validity(token)})


async def post_request_token(request: web.Request) -> web.Response:
    """A link proving an email address for registration, when mail is set up; an
    address already in use gets a notice instead, and the same answer."""
    body = await read_json_object(request)
    hs = homeserver(request)
    if not request.path.endswith("/email/requestToken") or not hs.validation.enabled:
        raise MatrixError(
            403,
            "M_THREEPID_DENIED",
            "This server does not accept this kind of third-party identifier for registration",
        )
    hs.registration.flows()  # 403 when registration is closed
    sid = await hs.validation.request_token(Purpose.REGISTRATION, body, request.remote or "-")
    return json_response(sid)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/register", post_register)
    add_client_route(app, "GET", "/register/available", get_available)
    add_client_route(app, "POST", "/register/email/requestToken", post_request_token)
    add_client_route(app, "POST", "/register/msisdn/requestToken", post_request_token)
    add_client_route(
        app,
        "GET",
        "/register/m.login.registration_token/validity",
        get_token_validity,
        versions=("v1",),
    )
