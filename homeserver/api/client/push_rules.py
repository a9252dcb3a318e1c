"""`/pushrules/`: the user's push rules (server defaults merged with their own)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route

RULE = "/pushrules/global/{kind}/{ruleId}"


async def get_all(request: web.Request) -> web.Response:
    requester = await require_user(request)
    ruleset = await homeserver(request).push_rules.get_all(requester.user_id)
    return json_response({"global": ruleset})


async def get_global(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return json_response(await homeserver(request).push_rules.get_all(requester.user_id))


async def get_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    rule = await homeserver(request).push_rules.get_rule(
        requester.user_id, info["kind"], info["ruleId"]
    )
    return json_response(rule)


async def put_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    info = request.match_info
    await homeserver(request).push_rules.put_rule(
        requester.user_id,
        info["kind"],
        info["ruleId"],
        body,
        before=request.query.get("before"),
        after=request.query.get("after"),
    )
    return json_response({})


async def delete_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    await homeserver(request).push_rules.delete_rule(
        requester.user_id, info["kind"], info["ruleId"]
    )
    return json_response({})


async def _attribute(request: web.Request, name: str) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    rule = await homeserver(request).push_rules.get_rule(
        requester.user_id, info["kind"], info["ruleId"]
    )
    return json_response({name: rule[name]})


async def get_enabled(request: web.Request) -> web.Response:
    return await _attribute(request, "enabled")


async def get_actions(request: web.Request) -> web.Response:
    return await _attribute(request, "actions")


async def put_enabled(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    if "enabled" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "'enabled' is required")
    info = request.match_info
    await homeserver(request).push_rules.set_enabled(
        requester.user_id, info["kind"], info["ruleId"], body["enabled"]
    )
    return json_response({})


async def put_actions(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    if "actions" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "'actions' is required")
    info = request.match_info
    await homeserver(request).push_rules.set_actions(
        requester.user_id, info["kind"], info["ruleId"], body["actions"]
    )
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/pushrules/", get_all)
    add_client_route(app, "GET", "/pushrules/global/", get_global)
    add_client_route(app, "GET", RULE, get_rule)
    add_client_route(app, "PUT", RULE, put_rule)
    add_client_route(app, "DELETE", RULE, delete_rule)
    add_client_route(app, "GET", RULE + "/enabled", get_enabled)
    add_client_route(app, "PUT", RULE + "/enabled", put_enabled)
    add_client_route(app, "GET", RULE + "/actions", get_actions)
    add_client_route(app, "PUT", RULE + "/actions", put_actions)
