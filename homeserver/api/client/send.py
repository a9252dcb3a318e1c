"""Sending: messages, state events and redactions."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.client.delayed_events import delay_param
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.accounts.auth import Requester

_MAX_TS_DIGITS = 15


def _massaged_ts(request: web.Request, requester: Requester) -> int | None:
    """The `ts` an application service dates its users' events with (bridges importing
    history); ignored from anyone else."""
    raw = request.query.get("ts")
    if raw is None or requester.appservice_id is None:
        return None
    if not raw.isdigit() or len(raw) > _MAX_TS_DIGITS:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a time in milliseconds")
    return int(raw)


async def send_message(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    content = await read_json_object(request, event_content=True)
    await hs.ratelimit.check("message", requester.user_id, requester)
    delay = delay_param(request)
    if delay is not None:
        delay_id = await hs.delayed_events.schedule(
            requester,
            request.match_info["room_id"],
            request.match_info["event_type"],
            content,
            delay,
            txn_id=request.match_info["txn_id"],
        )
        return json_response({"delay_id": delay_id})
    event_id, _ = await hs.send.send(
        requester,
        request.match_info["room_id"],
        request.match_info["event_type"],
        content,
        txn_id=request.match_info["txn_id"],
        ts=_massaged_ts(request, requester),
    )
    await hs.presence.user_active(requester.user_id)
    return json_response({"event_id": event_id})


async def send_state(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    content = await read_json_object(request)
    state_key = request.match_info.get("state_key", "")
    delay = delay_param(request)
    if delay is not None:
        await hs.ratelimit.check("message", requester.user_id, requester)
        delay_id = await hs.delayed_events.schedule(
            requester,
            request.match_info["room_id"],
            request.match_info["event_type"],
            content,
            delay,
            state_key=state_key,
        )
        return json_response({"delay_id": delay_id})
    event_id, _ = await hs.send.send(
        requester,
        request.match_info["room_id"],
        request.match_info["event_type"],
        content,
        state_key=state_key,
        ts=_massaged_ts(request, requester),
    )
    return json_response({"event_id": event_id})


async def redact(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await read_json_object(request) if request.can_read_body else {}
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
    await hs.ratelimit.check("message", requester.user_id, requester)
    event_id, _ = await hs.send.redact(
        requester,
        request.match_info["room_id"],
        request.match_info["event_id"],
        reason,
        request.match_info["txn_id"],
    )
    return json_response({"event_id": event_id})


def register(app: web.Application) -> None:
    add_client_route(app, "PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}", send_message)
    add_client_route(app, "PUT", "/rooms/{room_id}/state/{event_type}", send_state)
    add_client_route(app, "PUT", "/rooms/{room_id}/state/{event_type}/{state_key:.*}", send_state)
    add_client_route(app, "PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}", redact)
