"""Room history and user activity in the admin API, at Synapse's paths: messages,
context, timestamp lookup, fetch_event, invite and join counts, redacting a user's
events; and the experimental-features switch, for which this server has no features."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import optional_body
from homeserver.api.client import hierarchy
from homeserver.api.context import homeserver
from homeserver.api.errors import invalid_param, json_response

V1 = "/_synapse/admin/v1"


async def messages(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_room_history.messages(
            request.match_info["room_id"],
            start=request.query.get("from"),
            direction=request.query.get("dir", "f"),
            limit=request.query.get("limit"),
        )
    )


async def context(request: web.Request) -> web.Response:
    m = request.match_info
    return json_response(
        await homeserver(request).admin_room_history.context(
            m["room_id"], m["event_id"], request.query.get("limit"), request.query.get("filter")
        )
    )


async def timestamp_to_event(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_room_history.timestamp_to_event(
            request.match_info["room_id"], request.query.get("ts"), request.query.get("dir")
        )
    )


async def fetch_event(request: web.Request) -> web.Response:
    history = homeserver(request).admin_room_history
    return json_response(await history.fetch_event(request.match_info["event_id"]))


async def sent_invite_count(request: web.Request) -> web.Response:
    count = await homeserver(request).admin_room_history.counts(
        request.match_info["user_id"], request.query.get("from_ts"), invites=True
    )
    return json_response({"invite_count": count})


async def joined_room_count(request: web.Request) -> web.Response:
    count = await homeserver(request).admin_room_history.counts(
        request.match_info["user_id"], request.query.get("from_ts"), invites=False
    )
    return json_response({"cumulative_joined_room_count": count})


async def redact_user(request: web.Request) -> web.Response:
    body = await optional_body(request)
    redact_id = await homeserver(request).admin_room_history.start_redaction(
        request.match_info["user_id"], body
    )
    return json_response({"redact_id": redact_id})


async def redact_status(request: web.Request) -> web.Response:
    history = homeserver(request).admin_room_history
    return json_response(await history.redaction_status(request.match_info["redact_id"]))


async def get_features(request: web.Request) -> web.Response:
    return json_response({"features": {}})


async def put_features(request: web.Request) -> web.Response:
    features = (await optional_body(request)).get("features", {})
    if not isinstance(features, dict):
        raise invalid_param("features must be an object")
    if features:
        raise invalid_param(f"Unknown experimental features: {', '.join(sorted(features))}")
    return json_response({})


def register(app: web.Application) -> None:
    room = f"{V1}/rooms/{{room_id}}"
    app.router.add_get(f"{room}/messages", messages)
    app.router.add_get(f"{room}/context/{{event_id}}", context)
    app.router.add_get(f"{room}/timestamp_to_event", timestamp_to_event)
    # The client API's hierarchy, as the admin sees it (Synapse's ignores visibility).
    app.router.add_get(f"{room}/hierarchy", hierarchy.get_hierarchy)
    app.router.add_get(f"{V1}/fetch_event/{{event_id}}", fetch_event)
    app.router.add_get(f"{V1}/users/{{user_id}}/sent_invite_count", sent_invite_count)
    app.router.add_get(f"{V1}/users/{{user_id}}/cumulative_joined_room_count", joined_room_count)
    app.router.add_post(f"{V1}/user/{{user_id}}/redact", redact_user)
    app.router.add_get(f"{V1}/user/redact_status/{{redact_id}}", redact_status)
    app.router.add_get(f"{V1}/experimental_features/{{user_id}}", get_features)
    app.router.add_put(f"{V1}/experimental_features/{{user_id}}", put_features)
