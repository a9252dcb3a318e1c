"""Event and user reports in the admin API, at Synapse's paths and in its shapes; and
the server's version, which admin tools read first."""

from __future__ import annotations

import platform

from aiohttp import web

from homeserver.api.admin.access import public, query_int
from homeserver.api.context import homeserver
from homeserver.api.errors import invalid_param, json_response
from homeserver.api.federation.version import VERSION
from homeserver.services.admin.abuse_reports import EVENT_FILTERS, USER_FILTERS

V1 = "/_synapse/admin/v1"


def _filters(request: web.Request, names: frozenset[str]) -> dict[str, str]:
    return {name: request.query[name] for name in names if request.query.get(name)}


def _ascending(request: web.Request) -> bool:
    """`dir`: b (newest first, the default for reports) or f."""
    raw = request.query.get("dir", "b")
    if raw not in ("f", "b"):
        raise invalid_param("Query parameter 'dir' must be f or b")
    return raw == "f"


async def list_event_reports(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).abuse_reports.list_event_reports(
            _filters(request, EVENT_FILTERS),
            ascending=_ascending(request),
            offset=query_int(request, "from", 0),
            limit=query_int(request, "limit", 100),
        )
    )


async def get_event_report(request: web.Request) -> web.Response:
    found = await homeserver(request).abuse_reports.get_event_report(request.match_info["id"])
    return json_response(found)


async def delete_event_report(request: web.Request) -> web.Response:
    await homeserver(request).abuse_reports.delete_event_report(request.match_info["id"])
    return json_response({})


async def list_user_reports(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).abuse_reports.list_user_reports(
            _filters(request, USER_FILTERS),
            ascending=_ascending(request),
            offset=query_int(request, "from", 0),
            limit=query_int(request, "limit", 100),
        )
    )


async def get_user_report(request: web.Request) -> web.Response:
    found = await homeserver(request).abuse_reports.get_user_report(request.match_info["id"])
    return json_response(found)


async def delete_user_report(request: web.Request) -> web.Response:
    await homeserver(request).abuse_reports.delete_user_report(request.match_info["id"])
    return json_response({})


async def server_version(request: web.Request) -> web.Response:
    """Public, as in Synapse."""
    return json_response({"server_version": VERSION, "python_version": platform.python_version()})


def register(app: web.Application) -> None:
    app.router.add_get(f"{V1}/event_reports", list_event_reports)
    app.router.add_get(f"{V1}/event_reports/{{id}}", get_event_report)
    app.router.add_delete(f"{V1}/event_reports/{{id}}", delete_event_report)
    app.router.add_get(f"{V1}/user_reports", list_user_reports)
    app.router.add_get(f"{V1}/user_reports/{{id}}", get_user_report)
    app.router.add_delete(f"{V1}/user_reports/{{id}}", delete_user_report)
    app.router.add_get(f"{V1}/server_version", public(server_version))
