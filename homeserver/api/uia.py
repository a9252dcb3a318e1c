"""User-interactive auth at the HTTP edge: the 401 challenge response."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.services.accounts import uia
from homeserver.services.accounts.auth import Requester


class UiaChallenge(MatrixError):
    """401 with flows, params, session and completed stages (and errcode/error only
    when a submitted stage failed), as the spec's user-interactive auth requires."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, str(body.get("errcode", "")), str(body.get("error", "")))
        self.body = body

    def response(self) -> web.Response:
        return json_response(self.body, status=401)


async def reauthenticate(request: web.Request, body: dict[str, Any], requester: Requester) -> None:
    """Make the requester prove again who they are (password, or single sign-on for
    accounts linked to a provider) before this request runs."""
    hs = homeserver(request)
    challenge = uia.Challenge(
        flows=await hs.sso.reauth_flows(requester.user_id),
        request_key=uia.request_key(request.method, request.path),
        user_id=requester.user_id,
    )
    try:
        await hs.uia.authenticate(challenge, body.get("auth"))
    except uia.AuthIncomplete as exc:
        raise UiaChallenge(exc.body) from None
