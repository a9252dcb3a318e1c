"""Application services asking the homeserver to reach them:
`POST /_matrix/client/v1/appservice/{appserviceId}/ping`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.appservices.sender import BadStatus


async def post_ping(request: web.Request) -> web.Response:
    """Only the AS itself (its as_token) may ask for its own ping."""
    requester = await require_user(request)
    hs = homeserver(request)
    as_id = request.match_info["appservice_id"]
    if requester.appservice_id is None or requester.appservice_id != as_id:
        raise MatrixError(
            403, "M_FORBIDDEN", "Provided access token is not the appservice's as_token"
        )
    body = await read_json_object(request)
    transaction_id = body.get("transaction_id")
    if transaction_id is not None and not isinstance(transaction_id, str):
        raise MatrixError(400, "M_BAD_JSON", "transaction_id must be a string")
    try:
        duration = await hs.appservices_sender.ping(
            hs.appservices_registry.by_id[as_id], transaction_id
        )
    except BadStatus as exc:
        body = {"errcode": exc.errcode, "error": exc.message}
        return json_response({**body, "status": exc.as_status, "body": exc.as_body}, status=502)
    return json_response({"duration_ms": duration})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/appservice/{appservice_id}/ping", post_ping, versions=("v1",))
