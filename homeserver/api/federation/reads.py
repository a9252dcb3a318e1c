"""Reading rooms over federation: /event, /state, /state_ids, /event_auth, /backfill,
/get_missing_events, /timestamp_to_event, and the directory and profile queries."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, bad_json, json_response
from homeserver.api.federation.auth import require_server
from homeserver.api.http import read_json_object

V1 = "/_matrix/federation/v1"


def _param(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise MatrixError(400, "M_MISSING_PARAM", f"{name} is required")
    return value


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        raise MatrixError(400, "M_INVALID_PARAM", "expected an integer") from None


async def get_event(request: web.Request) -> web.Response:
    origin = await require_server(request)
    reads = homeserver(request).reads
    return json_response(await reads.event(origin, request.match_info["event_id"]))


async def get_state_ids(request: web.Request) -> web.Response:
    origin = await require_server(request)
    reads = homeserver(request).reads
    ids, chain = await reads.state_ids(
        origin, request.match_info["room_id"], _param(request, "event_id")
    )
    return json_response({"pdu_ids": sorted(ids), "auth_chain_ids": sorted(chain)})


async def get_state(request: web.Request) -> web.Response:
    origin = await require_server(request)
    reads = homeserver(request).reads
    answer = await reads.state(origin, request.match_info["room_id"], _param(request, "event_id"))
    return json_response(answer)


async def get_event_auth(request: web.Request) -> web.Response:
    origin = await require_server(request)
    reads = homeserver(request).reads
    answer = await reads.event_auth(
        origin, request.match_info["room_id"], request.match_info["event_id"]
    )
    return json_response(answer)


async def backfill(request: web.Request) -> web.Response:
    origin = await require_server(request)
    start = request.query.getall("v", [])
    if not start:
        raise MatrixError(400, "M_MISSING_PARAM", "v is required")
    limit = _int(request.query.get("limit"), 10)
    reads = homeserver(request).reads
    return json_response(
        await reads.backfill(origin, request.match_info["room_id"], list(start), limit)
    )


async def get_missing_events(request: web.Request) -> web.Response:
    origin = await require_server(request)
    body = await read_json_object(request)
    earliest = body.get("earliest_events", [])
    latest = body.get("latest_events", [])
    if not isinstance(earliest, list) or not isinstance(latest, list):
        raise bad_json("earliest_events and latest_events must be arrays")
    ids = [e for e in [*earliest, *latest] if isinstance(e, str)]
    if len(ids) != len(earliest) + len(latest) or len(ids) > 100:
        raise bad_json("event ids must be strings, at most 100")
    reads = homeserver(request).reads
    answer = await reads.missing_events(
        origin,
        request.match_info["room_id"],
        earliest,
        latest,
        _int(body.get("limit"), 10),
        _int(body.get("min_depth"), 0),
    )
    return json_response(answer)


async def timestamp_to_event(request: web.Request) -> web.Response:
    origin = await require_server(request)
    ts = _param(request, "ts")
    if not ts.isascii() or not ts.isdigit() or len(ts) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds")
    direction = _param(request, "dir")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    answer = await homeserver(request).reads.timestamp_to_event(
        origin, request.match_info["room_id"], int(ts), forward=direction == "f"
    )
    return json_response(answer)


async def query_directory(request: web.Request) -> web.Response:
    await require_server(request)
    alias = _param(request, "room_alias")
    return json_response(await homeserver(request).reads.directory(alias))


async def query_profile(request: web.Request) -> web.Response:
    await require_server(request)
    user_id = _param(request, "user_id")
    hs = homeserver(request)
    field = request.query.get("field")
    if field is not None:
        return json_response(await hs.profile.get_profile_field(user_id, field))
    return json_response(await hs.profile.get_profile(user_id))


def register(app: web.Application) -> None:
    app.router.add_get(f"{V1}/event/{{event_id}}", get_event)
    app.router.add_get(f"{V1}/state_ids/{{room_id}}", get_state_ids)
    app.router.add_get(f"{V1}/state/{{room_id}}", get_state)
    app.router.add_get(f"{V1}/event_auth/{{room_id}}/{{event_id}}", get_event_auth)
    app.router.add_get(f"{V1}/backfill/{{room_id}}", backfill)
    app.router.add_post(f"{V1}/get_missing_events/{{room_id}}", get_missing_events)
    app.router.add_get(f"{V1}/timestamp_to_event/{{room_id}}", timestamp_to_event)
    app.router.add_get(f"{V1}/query/directory", query_directory)
    app.router.add_get(f"{V1}/query/profile", query_profile)
