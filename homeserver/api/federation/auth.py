"""Authenticating requests from other servers (X-Matrix), and the middleware that makes
every `/_matrix/federation/` route do it (and refuse, for a route about a room, a server
the room's server ACL denies).

`require_server(request)` returns the verified origin. The signature covers the method,
the request target exactly as it arrived (path and query, still percent-encoded), both
server names and the JSON body. Every failure is 401 M_UNAUTHORIZED, as the spec says;
the origin's keys come through the KeyRing (fetched on first contact).
"""

from __future__ import annotations

from aiohttp import web

from federation.xmatrix import SCHEME, XMatrixError, parse_authorization, verify_request
from homeserver.api.context import homeserver
from homeserver.api.errors import Handler, MatrixError
from homeserver.api.http import FEDERATION_PREFIX, USER_KEY, parse_json_body
from homeserver.services.core.clock import now_ms

ORIGIN_KEY = web.RequestKey("federation_origin", str)
# Federation routes that the spec leaves unauthenticated.
UNAUTHENTICATED = frozenset(
    {"/_matrix/federation/v1/version", "/_matrix/federation/v1/openid/userinfo"}
)
MAX_AUTH_HEADERS = 4


def unauthorized(why: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", why)


async def require_server(request: web.Request) -> str:
    """The server that signed this request; raises 401 M_UNAUTHORIZED otherwise."""
    cached = request.get(ORIGIN_KEY)
    if cached is not None:
        return cached
    headers = [
        h
        for h in request.headers.getall("Authorization", [])
        if h.strip()[: len(SCHEME)].lower() == SCHEME.lower()
    ]
    if not headers:
        raise unauthorized("missing X-Matrix Authorization header")
    content = await parse_json_body(request)
    hs = homeserver(request)
    error = "X-Matrix authentication failed"
    # A server signing with several keys sends one header per key; one must verify.
    for header in headers[:MAX_AUTH_HEADERS]:
        try:
            auth = parse_authorization(header)
            if auth.destination is not None and auth.destination != hs.server_name:
                raise XMatrixError(f"request is for {auth.destination}, not for us")
            now = now_ms()
            lookup = await hs.keyring.lookup({auth.origin: [auth.key_id]}, now)
            verify_request(
                header,
                method=request.method,
                uri=request.raw_path,
                content=content,
                our_server_name=hs.server_name,
                lookup=lookup,
                now_ms=now,
            )
        except XMatrixError as exc:
            error = str(exc)
            continue
        request[ORIGIN_KEY] = auth.origin
        request[USER_KEY] = auth.origin
        hs.remote_sender.on_contact(auth.origin)
        return auth.origin
    raise unauthorized(error)


@web.middleware
async def federation_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every routed federation request before its handler runs, so that no
    handler can forget to."""
    route = request.match_info.route
    if (
        request.path.startswith(FEDERATION_PREFIX)
        and request.path not in UNAUTHENTICATED
        and route.resource is not None  # unrouted: let it become a 404/405
        and request.method != "OPTIONS"
    ):
        origin = await require_server(request)
        room_id = request.match_info.get("room_id")
        if room_id is not None:
            # Every route naming a room is one the server ACLs protect (the spec lists
            # make_/send_ join, leave and knock, invite, state, state_ids, backfill,
            # event_auth and get_missing_events).
            await homeserver(request).server_acl.check(origin, room_id)
    return await handler(request)
