"""`PUT /_matrix/federation/v1/send/{txnId}`: PDUs and EDUs from another server."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import bad_json, json_response
from homeserver.api.federation.auth import require_server
from homeserver.api.http import read_json_object
from homeserver.services.remote.inbound import MAX_EDUS, MAX_PDUS


async def send_transaction(request: web.Request) -> web.Response:
    origin = await require_server(request)
    body = await read_json_object(request)
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise bad_json("pdus and edus must be arrays")
    if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
        raise bad_json(f"at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")
    hs = homeserver(request)
    answer = await hs.inbound.on_transaction(origin, request.match_info["txn_id"], pdus, edus)
    return json_response(answer)


def register(app: web.Application) -> None:
    app.router.add_put("/_matrix/federation/v1/send/{txn_id}", send_transaction)
