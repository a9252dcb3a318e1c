"""Single sign-on at Synapse's addresses, so clients and providers configured for
Synapse work unchanged: `/login/sso/redirect[/{idpId}]`, the provider's callback
`/_synapse/client/oidc/callback`, the provider chooser, the username page of a
first login, and the SSO fallback of user-interactive auth."""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlparse

from aiohttp import web

from homeserver.api import sso_pages
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.routes import CLIENT_PREFIX, add_client_route
from homeserver.services.sso.sso import Finished, SsoError, SsoService

BROWSER_COOKIE = "oidc_session"
BROWSER_COOKIE_PATH = "/_synapse/client/oidc"
USERNAME_COOKIE = "username_mapping_session"
USERNAME_COOKIE_PATH = "/_synapse/client/pick_username"
FALLBACK_PATH = "/auth/m.login.sso/fallback/web"
_SCRIPT_SCHEMES = frozenset({"javascript", "data", "vbscript", "file"})

log = logging.getLogger(__name__)


def _sso(request: web.Request) -> SsoService:
    sso = homeserver(request).sso
    if not sso.enabled:
        raise MatrixError(404, "M_UNRECOGNIZED", "Single sign-on is not configured")
    return sso


def _redirect(url: str) -> web.Response:
    response = web.Response(status=302)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_cookie(response: web.Response, sso: SsoService, name: str, value: str, path: str) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        httponly=True,
        samesite="Lax",
        secure=sso.callback_url.startswith("https:"),
        max_age=15 * 60,
    )


async def _start(
    sso: SsoService, idp_id: str, redirect_url: str | None, uia: str | None
) -> web.Response:
    try:
        started = await sso.start(idp_id, redirect_url, uia)
    except SsoError as exc:
        return sso_pages.error_page(exc.message, exc.status)
    response = _redirect(started.url)
    _set_cookie(response, sso, BROWSER_COOKIE, started.browser_token, BROWSER_COOKIE_PATH)
    return response


def _redirect_url(request: web.Request) -> str:
    """The client's URL (web or an app's own scheme); never one that runs script."""
    url = request.query.get("redirectUrl")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing redirectUrl")
    scheme = urlparse(url).scheme.lower()
    if not scheme or scheme in _SCRIPT_SCHEMES or "\x00" in url:
        raise MatrixError(400, "M_INVALID_PARAM", "redirectUrl must be an absolute URL")
    return url


async def sso_redirect(request: web.Request) -> web.Response:
    """With one provider, straight to it; with several, the page to choose."""
    sso = _sso(request)
    redirect_url = _redirect_url(request)
    await homeserver(request).ratelimit.check("login", request.remote or "-")
    if len(sso.providers) == 1:
        return await _start(sso, next(iter(sso.providers)), redirect_url, None)
    version = request.path.split("/")[3]
    choices = [(p["id"], p["name"]) for p in sso.identity_providers()]
    return sso_pages.pick_provider(choices, redirect_url, f"{CLIENT_PREFIX}/{version}")


async def sso_redirect_to(request: web.Request) -> web.Response:
    sso = _sso(request)
    redirect_url = _redirect_url(request)
    idp_id = request.match_info["idp_id"]
    if idp_id not in sso.providers:
        raise MatrixError(404, "M_NOT_FOUND", f"No identity provider {idp_id!r}")
    await homeserver(request).ratelimit.check("login", request.remote or "-")
    return await _start(sso, idp_id, redirect_url, None)


def _finished(finished: Finished) -> web.Response:
    if finished.confirm is not None:
        return sso_pages.confirm_redirect(finished.confirm)
    if finished.redirect is None:
        return sso_pages.reauth_done()
    return _redirect(finished.redirect)


async def oidc_callback(request: web.Request) -> web.Response:
    """The provider's answer (a GET, or a POST with response_mode=form_post)."""
    sso = _sso(request)
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: str(v) for k, v in (await request.post()).items()})
    try:
        finished = await sso.callback(params, request.cookies.get(BROWSER_COOKIE))
    except SsoError as exc:
        log.info("single sign-on refused (%d): %s", exc.status, exc.message)
        response = sso_pages.error_page(exc.message, exc.status)
    else:
        response = _finished(finished)
        if finished.username_token is not None:
            _set_cookie(
                response, sso, USERNAME_COOKIE, finished.username_token, USERNAME_COOKIE_PATH
            )
    response.del_cookie(BROWSER_COOKIE, path=BROWSER_COOKIE_PATH)
    return response


async def backchannel_logout(request: web.Request) -> web.Response:
    """The provider's server tells us a session ended (OpenID Connect Back-Channel
    Logout 1.0): 200 once its devices are signed out, 400 with an OAuth error."""
    sso = _sso(request)
    token = (await request.post()).get("logout_token")
    if not isinstance(token, str) or not token:
        return web.json_response(
            {"error": "invalid_request", "error_description": "Missing logout_token"}, status=400
        )
    try:
        await sso.backchannel_logout(token)
    except SsoError as exc:
        log.info("back-channel logout refused (%d): %s", exc.status, exc.message)
        error = "invalid_request" if exc.status == 400 else "temporarily_unavailable"
        return web.json_response(
            {"error": error, "error_description": exc.message}, status=exc.status
        )
    return web.Response(status=200, headers={"Cache-Control": "no-store"})


async def pick_username_page(request: web.Request) -> web.Response:
    sso = _sso(request)
    try:
        session = await sso.username_session(request.cookies.get(USERNAME_COOKIE))
    except SsoError as exc:
        return sso_pages.error_page(exc.message, exc.status)
    return sso_pages.pick_username(session.localpart, session.display_name)


async def pick_username_submit(request: web.Request) -> web.Response:
    sso = _sso(request)
    token = request.cookies.get(USERNAME_COOKIE)
    username = str((await request.post()).get("username", "")).strip().lower()
    try:
        session = await sso.username_session(token)
        try:
            finished = await sso.pick_username(token, username)
        except SsoError as exc:
            if exc.status == 403:
                raise
            return sso_pages.pick_username(username, session.display_name, exc.message, exc.status)
    except SsoError as exc:
        return sso_pages.error_page(exc.message, exc.status)
    response = _finished(finished)
    response.del_cookie(USERNAME_COOKIE, path=USERNAME_COOKIE_PATH)
    return response


async def check_username(request: web.Request) -> web.Response:
    """Synapse's availability check for the username page."""
    sso = _sso(request)
    username = request.query.get("username", "")
    if await sso.username_available(username):
        return json_response({"available": True})
    raise MatrixError(400, "M_USER_IN_USE", f"{username!r} is taken or not a valid username")


async def sso_fallback(request: web.Request) -> web.Response:
    """User-interactive auth's SSO stage: confirm, then sign in again at a provider
    this account is linked to; the callback completes the stage."""
    hs = homeserver(request)
    sso = _sso(request)
    session_id = request.query.get("session", "")
    session = await hs.uia.session_info(session_id)
    if session is None or session.user_id is None:
        return sso_pages.error_page("Unknown or expired session; please try again", 400)
    linked = await sso.linked_providers(session.user_id)
    idp_id = request.query.get("idp_id")
    if idp_id is not None:
        if idp_id not in linked:
            return sso_pages.error_page("Your account is not linked to that provider", 403)
        return await _start(sso, idp_id, None, session_id)
    if not linked:
        return sso_pages.error_page("Your account is not linked to any identity provider", 403)
    links = [
        (
            f"?{urlencode({'session': session_id, 'idp_id': idp})}",
            f"Continue with {sso.provider(idp).config.idp_name}",
        )
        for idp in linked
    ]
    return sso_pages.reauth(_what(session.request_key), links)


# What a re-authenticated request does, in the person's words (by path ending).
_ACTIONS = (
    ("/delete_devices", "remove devices from your account"),
    ("/account/password", "change your password"),
    ("/account/deactivate", "close your account"),
    ("/keys/device_signing/upload", "set up cross-signing for your encryption keys"),
    ("/login/get_token", "sign in on another device"),
)


def _what(request_key: str) -> str:
    method, _, path = request_key.partition(" ")
    if method == "DELETE" and "/devices/" in path:
        return "remove a device from your account"
    return next((text for end, text in _ACTIONS if path.endswith(end)), "confirm this request")


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/login/sso/redirect", sso_redirect)
    add_client_route(app, "GET", "/login/sso/redirect/{idp_id}", sso_redirect_to)
    add_client_route(app, "GET", FALLBACK_PATH, sso_fallback)
    app.router.add_route("GET", "/_synapse/client/oidc/callback", oidc_callback)
    app.router.add_route("POST", "/_synapse/client/oidc/callback", oidc_callback)
    app.router.add_route("POST", "/_synapse/client/oidc/backchannel_logout", backchannel_logout)
    app.router.add_route("GET", "/_synapse/client/pick_username/account", pick_username_page)
    app.router.add_route("POST", "/_synapse/client/pick_username/account", pick_username_submit)
    app.router.add_route("GET", "/_synapse/client/pick_username/check", check_username)
