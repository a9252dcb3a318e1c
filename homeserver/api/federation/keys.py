"""The key API: `GET /_matrix/key/v2/server` (our keys, self-signed) and the notary
`/_matrix/key/v2/query` (other servers' keys, countersigned by us). Both are
unauthenticated, as the spec says."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.identifiers import is_valid_server_name
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, bad_json, json_response
from homeserver.api.http import read_json_object
from homeserver.services.core.clock import now_ms
from homeserver.services.remote.keyring import NOTARY_MAX_KEY_IDS, NOTARY_MAX_SERVERS


async def get_server_keys(request: web.Request) -> web.Response:
    return json_response(homeserver(request).keyring.own_key_response())


async def query_keys(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    server_keys = body.get("server_keys")
    if not isinstance(server_keys, dict):
        raise bad_json("server_keys must be an object")
    if len(server_keys) > NOTARY_MAX_SERVERS:
        raise bad_json(f"at most {NOTARY_MAX_SERVERS} servers per query")
    default = now_ms()
    criteria: dict[str, tuple[list[str], int]] = {}
    for server_name, keys in server_keys.items():
        if not is_valid_server_name(server_name):
            continue
        if not isinstance(keys, dict):
            raise bad_json(f"the key criteria for {server_name} must be an object")
        if len(keys) > NOTARY_MAX_KEY_IDS:
            raise bad_json(f"at most {NOTARY_MAX_KEY_IDS} key ids per server")
        minimums = [_minimum(criterion, default) for criterion in keys.values()]
        criteria[server_name] = (list(keys), max(minimums, default=default))
    return await _answer(request, criteria)


async def query_server_keys(request: web.Request) -> web.Response:
    server_name = request.match_info["server_name"]
    if not is_valid_server_name(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "not a valid server name")
    raw = request.query.get("minimum_valid_until_ts")
    minimum = now_ms()
    if raw is not None:
        if not raw.isdigit() or len(raw) > 16:
            raise MatrixError(400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")
        minimum = int(raw)
    return await _answer(request, {server_name: ([], minimum)})


async def _answer(request: web.Request, criteria: dict[str, tuple[list[str], int]]) -> web.Response:
    responses = await homeserver(request).keyring.query(criteria)
    return json_response({"server_keys": responses})


def _minimum(criterion: Any, default: int) -> int:
    value = criterion.get("minimum_valid_until_ts") if isinstance(criterion, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def register(app: web.Application) -> None:
    app.router.add_get("/_matrix/key/v2/server", get_server_keys)
    app.router.add_get("/_matrix/key/v2/server/{key_id}", get_server_keys)
    app.router.add_post("/_matrix/key/v2/query", query_keys)
    app.router.add_get("/_matrix/key/v2/query/{server_name}", query_server_keys)
