"""Media moderation in the admin API, at Synapse's paths (Ketesa's media pages)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import admin, query_ascending, query_bool, query_choice, query_int
from homeserver.api.context import homeserver
from homeserver.api.errors import Handler, MatrixError, json_response
from homeserver.services.admin.media import ORDER_BY

V1 = "/_synapse/admin/v1"


# Below this a "millisecond" time is surely seconds (as Synapse reasons: Dec 1970 in ms).
MIN_BEFORE_TS = 30_000_000_000


def _required_ts(request: web.Request) -> int:
    if "before_ts" not in request.query:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing integer query parameter 'before_ts'")
    before_ts = query_int(request, "before_ts", 0)
    if before_ts < MIN_BEFORE_TS:
        raise MatrixError(
            400, "M_INVALID_PARAM", "before_ts is from 1970: give a time in milliseconds"
        )
    return before_ts


async def info(request: web.Request) -> web.Response:
    m = request.match_info
    return json_response(
        await homeserver(request).admin_media.info(m["server_name"], m["media_id"])
    )


async def user_media(request: web.Request) -> web.Response:
    """Newest first unless `dir=f`, as in Synapse."""
    query_ascending(request)  # refuses a `dir` other than f or b
    return json_response(
        await homeserver(request).admin_media.user_media(
            request.match_info["user_id"],
            order_by=query_choice(request, "order_by", ORDER_BY, "created_ts"),
            ascending=request.query.get("dir", "b") == "f",
            offset=query_int(request, "from", 0),
            limit=query_int(request, "limit", 100),
        )
    )


async def delete_user_media(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_media.delete_user_media(request.match_info["user_id"])
    return json_response(found)


def _quarantine(on: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        m = request.match_info
        await homeserver(request).admin_media.quarantine(
            admin(request).user_id, m["server_name"], m["media_id"], on
        )
        return json_response({})

    return handler


async def quarantine_room(request: web.Request) -> web.Response:
    count = await homeserver(request).admin_media.quarantine_room(
        admin(request).user_id, request.match_info["room_id"]
    )
    return json_response({"num_quarantined": count})


async def quarantine_user(request: web.Request) -> web.Response:
    count = await homeserver(request).admin_media.quarantine_user(
        admin(request).user_id, request.match_info["user_id"]
    )
    return json_response({"num_quarantined": count})


async def protect(request: web.Request) -> web.Response:
    await homeserver(request).admin_media.protect(request.match_info["media_id"], True)
    return json_response({})


async def unprotect(request: web.Request) -> web.Response:
    await homeserver(request).admin_media.protect(request.match_info["media_id"], False)
    return json_response({})


async def delete_one(request: web.Request) -> web.Response:
    m = request.match_info
    found = await homeserver(request).admin_media.delete_one(m["server_name"], m["media_id"])
    return json_response(found)


async def delete_older(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_media.delete_older(
            before_ts=_required_ts(request),
            size_gt=query_int(request, "size_gt", 0),
            keep_profiles=bool(query_bool(request, "keep_profiles", True)),
        )
    )


async def purge_cache(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_media.purge_remote_cache(_required_ts(request))
    return json_response(found)


async def room_media(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_media.room_media(request.match_info["room_id"])
    )


async def user_statistics(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_media.user_statistics(
            offset=query_int(request, "from", 0), limit=query_int(request, "limit", 100)
        )
    )


def register(app: web.Application) -> None:
    one = f"{V1}/media/{{server_name}}/{{media_id}}"
    app.router.add_get(one, info)
    app.router.add_delete(one, delete_one)
    app.router.add_post(f"{V1}/media/delete", delete_older)
    app.router.add_post(f"{V1}/media/{{server_name}}/delete", delete_older)
    app.router.add_post(f"{V1}/media/quarantine/{{server_name}}/{{media_id}}", _quarantine(True))
    app.router.add_post(f"{V1}/media/unquarantine/{{server_name}}/{{media_id}}", _quarantine(False))
    app.router.add_post(f"{V1}/media/protect/{{media_id}}", protect)
    app.router.add_post(f"{V1}/media/unprotect/{{media_id}}", unprotect)
    app.router.add_post(f"{V1}/room/{{room_id}}/media/quarantine", quarantine_room)
    app.router.add_get(f"{V1}/room/{{room_id}}/media", room_media)
    app.router.add_post(f"{V1}/user/{{user_id}}/media/quarantine", quarantine_user)
    app.router.add_get(f"{V1}/users/{{user_id}}/media", user_media)
    app.router.add_delete(f"{V1}/users/{{user_id}}/media", delete_user_media)
    app.router.add_post(f"{V1}/purge_media_cache", purge_cache)
    app.router.add_get(f"{V1}/statistics/users/media", user_statistics)
