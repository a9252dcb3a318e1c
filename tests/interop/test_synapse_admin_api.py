"""The admin calls Ketesa (the maintained synapse-admin) makes, replayed against Synapse
and against our server with the same data: the same status, and the fields the UI reads
present with the same JSON types.

Each call names where Ketesa makes it (etkecc/ketesa, src/providers/data/): `synapse.ts`
holds the resource map (lists, one record, references), `synapse-actions.ts` the custom
actions; synapse-admin's src/synapse/dataProvider.ts, which Ketesa grew from, makes the
same list and record calls.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import aiohttp
import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, client_url, session

pytestmark = pytest.mark.interop
SECRET = "interop-secret"  # the harness's Synapse has it too
V1, V2, V3 = "/_synapse/admin/v1", "/_synapse/admin/v2", "/_synapse/admin/v3"

# (method, path, body, source, {field path: JSON type}); paths are formatted with the
# scenario's ids. A field path is dotted keys, `0` for a list's first element.
CALLS: list[tuple[str, str, Any, str, dict[str, str]]] = [
    ("GET", f"{V1}/server_version", None, "synapse.ts getServerVersion", {"server_version": "str"}),
    (
        "GET",
        f"{V3}/users?from=0&limit=10&guests=true",
        None,
        "synapse.ts users.listPath",
        {
            "users": "list",
            "total": "int",
            "users.0.name": "str",
            "users.0.admin": "bool",
            "users.0.deactivated": "bool",
            "users.0.shadow_banned": "bool",
            "users.0.is_guest": "bool",
            "users.0.creation_ts": "int",
            "users.0.locked": "bool",
        },
    ),
    (
        "GET",
        f"{V2}/users/{{user}}",
        None,
        "synapse.ts users.path (getOne)",
        {
            "name": "str",
            "admin": "bool",
            "displayname": "str",
            "threepids": "list",
            "external_ids": "list",
            "deactivated": "bool",
            "locked": "bool",
            "creation_ts": "int",
        },
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/joined_rooms",
        None,
        "synapse.ts joined_rooms",
        {"joined_rooms": "list", "total": "int", "joined_rooms.0": "str"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/memberships",
        None,
        "synapse.ts memberships",
        {"memberships": "dict"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/accountdata",
        None,
        "synapse-actions.ts getAccountData",
        {"account_data": "dict", "account_data.global": "dict", "account_data.rooms": "dict"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/pushers",
        None,
        "synapse.ts pushers",
        {"pushers": "list", "total": "int"},
    ),
    (
        "GET",
        f"{V2}/users/{{user}}/devices",
        None,
        "synapse.ts devices",
        {
            "devices": "list",
            "total": "int",
            "devices.0.device_id": "str",
            "devices.0.user_id": "str",
        },
    ),
    (
        "GET",
        f"{V1}/whois/{{user}}",
        None,
        "synapse.ts connections",
        {"user_id": "str", "devices": "dict"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/media",
        None,
        "synapse.ts users_media",
        {
            "media": "list",
            "total": "int",
            "media.0.media_id": "str",
            "media.0.media_length": "int",
            "media.0.created_ts": "int",
            "media.0.safe_from_quarantine": "bool",
        },
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/override_ratelimit",
        None,
        "synapse-actions.ts getRateLimits",
        {},
    ),
    (
        "GET",
        f"{V1}/username_available?username=freshname",
        None,
        "synapse-actions.ts checkUsernameAvailability",
        {"available": "bool"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/admin",
        None,
        "user_admin_api (Ketesa's admin toggle)",
        {"admin": "bool"},
    ),
    (
        "GET",
        f"{V1}/rooms?from=0&limit=10&search_term=Interop",
        None,
        "synapse.ts rooms.path",
        {
            "rooms": "list",
            "total_rooms": "int",
            "rooms.0.room_id": "str",
            "rooms.0.name": "str",
            "rooms.0.joined_members": "int",
            "rooms.0.public": "bool",
        },
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}",
        None,
        "synapse.ts rooms (getOne)",
        {
            "room_id": "str",
            "name": "str",
            "joined_members": "int",
            "public": "bool",
            "creator": "str",
            "version": "str",
        },
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/members",
        None,
        "synapse.ts room_members",
        {"members": "list", "total": "int", "members.0": "str"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/state",
        None,
        "synapse.ts room_state",
        {"state": "list", "state.0.event_id": "str", "state.0.type": "str"},
    ),
    (
        "GET",
        f"{V1}/room/{{room}}/media",
        None,
        "synapse.ts room_media",
        {"local": "list", "remote": "list"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/forward_extremities",
        None,
        "synapse.ts forward_extremities",
        {"count": "int", "results": "list", "results.0.event_id": "str"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/block",
        None,
        "synapse-actions.ts getRoomBlockStatus",
        {"block": "bool"},
    ),
    (
        "GET",
        f"{V1}/event_reports?from=0&limit=10",
        None,
        "synapse.ts reports",
        {
            "event_reports": "list",
            "total": "int",
            "event_reports.0.id": "int",
            "event_reports.0.event_id": "str",
            "event_reports.0.sender": "str",
            "event_reports.0.user_id": "str",
            "event_reports.0.room_id": "str",
            "event_reports.0.received_ts": "int",
            "event_reports.0.reason": "str",
        },
    ),
    (
        "GET",
        f"{V1}/event_reports/{{report}}",
        None,
        "synapse.ts reports (getOne)",
        {"event_json": "dict", "event_id": "str"},
    ),
    (
        "GET",
        f"{V1}/user_reports",
        None,
        "synapse.ts user_reports",
        {
            "user_reports": "list",
            "total": "int",
            "user_reports.0.target_user_id": "str",
            "user_reports.0.reason": "str",
        },
    ),
    (
        "GET",
        f"{V1}/registration_tokens",
        None,
        "synapse.ts registration_tokens",
        {"registration_tokens": "list"},
    ),
    (
        "GET",
        f"{V1}/federation/destinations",
        None,
        "synapse.ts destinations",
        {"destinations": "list", "total": "int"},
    ),
    (
        "GET",
        f"{V1}/statistics/users/media",
        None,
        "synapse.ts user_media_statistics",
        {
            "users": "list",
            "total": "int",
            "users.0.user_id": "str",
            "users.0.media_count": "int",
            "users.0.media_length": "int",
        },
    ),
    (
        "GET",
        f"{V1}/scheduled_tasks",
        None,
        "synapse.ts scheduled_tasks",
        {"scheduled_tasks": "list"},
    ),
    (
        "GET",
        f"{V1}/media/{{server}}/{{media}}",
        None,
        "media_admin_api (Ketesa media page)",
        {"media_info": "dict", "media_info.media_id": "str", "media_info.media_length": "int"},
    ),
    (
        "GET",
        f"{V1}/background_updates/status",
        None,
        "background_updates (Ketesa status)",
        {"enabled": "bool", "current_updates": "dict"},
    ),
    ("POST", f"{V1}/users/{{user}}/shadow_ban", {}, "synapse-actions.ts setShadowBan", {}),
    ("DELETE", f"{V1}/users/{{user}}/shadow_ban", None, "synapse-actions.ts setShadowBan", {}),
    (
        "POST",
        f"{V1}/users/{{user}}/override_ratelimit",
        {"messages_per_second": 5, "burst_count": 10},
        "synapse-actions.ts setRateLimits",
        {"messages_per_second": "int", "burst_count": "int"},
    ),
    (
        "DELETE",
        f"{V1}/users/{{user}}/override_ratelimit",
        None,
        "synapse-actions.ts setRateLimits",
        {},
    ),
    ("POST", f"{V1}/media/protect/{{media}}", {}, "synapse.ts protect_media", {}),
    ("POST", f"{V1}/media/unprotect/{{media}}", {}, "synapse.ts protect_media", {}),
    ("POST", f"{V1}/media/quarantine/{{server}}/{{media}}", {}, "synapse.ts quarantine_media", {}),
    (
        "POST",
        f"{V1}/media/unquarantine/{{server}}/{{media}}",
        {},
        "synapse.ts quarantine_media",
        {},
    ),
    (
        "POST",
        f"{V1}/join/{{room}}",
        {"user_id": "{other}"},
        "synapse-actions.ts joinUserToRoom",
        {"room_id": "str"},
    ),
    (
        "POST",
        f"{V1}/users/{{user}}/login",
        {},
        "synapse-actions.ts loginAsUser",
        {"access_token": "str"},
    ),
    (
        "POST",
        f"{V2}/users/{{user}}/delete_devices",
        {"devices": ["NOSUCHDEVICE"]},
        "synapse-actions.ts deleteUserDevices",
        {},
    ),
    ("PUT", f"{V1}/suspend/{{other}}", {"suspend": True}, "synapse-actions.ts suspendUser", {}),
    (
        "POST",
        f"{V1}/reset_password/{{other}}",
        {"new_password": "new pw", "logout_devices": True},
        "synapse-actions.ts resetPassword",
        {},
    ),
    ("POST", f"{V1}/rooms/{{room}}/make_room_admin", {}, "synapse-actions.ts makeRoomAdmin", {}),
    (
        "POST",
        f"{V1}/purge_history/{{room}}",
        {"purge_up_to_ts": "{now}"},
        "synapse-actions.ts purgeHistory",
        {"purge_id": "str"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/messages?dir=b&limit=5",
        None,
        "synapse-actions.ts getRoomMessages",
        {"chunk": "list"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/context/{{event}}?limit=5",
        None,
        "synapse-actions.ts getEventContext",
        {
            "event": "dict",
            "events_before": "list",
            "events_after": "list",
            "state": "list",
            "state.0.type": "str",
            "state.0.state_key": "str",
        },
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/timestamp_to_event?ts=1&dir=f",
        None,
        "synapse-actions.ts timestampToEvent",
        {"event_id": "str"},
    ),
    (
        "GET",
        f"{V1}/rooms/{{room}}/hierarchy",
        None,
        "synapse-actions.ts getRoomHierarchy",
        {"rooms": "list"},
    ),
    (
        "GET",
        f"{V1}/fetch_event/{{event}}",
        None,
        "synapse-actions.ts fetchEvent",
        {"event": "dict"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/sent_invite_count?from_ts=0",
        None,
        "synapse-actions.ts getSentInviteCount",
        {"invite_count": "int"},
    ),
    (
        "GET",
        f"{V1}/users/{{user}}/cumulative_joined_room_count?from_ts=0",
        None,
        "synapse-actions.ts getJoinedRoomCount",
        {"cumulative_joined_room_count": "int"},
    ),
    (
        "GET",
        f"{V1}/experimental_features/{{user}}",
        None,
        "synapse-actions.ts getExperimentalFeatures",
        {"features": "dict"},
    ),
    (
        "POST",
        f"{V1}/user/{{other}}/redact",
        {"rooms": []},
        "synapse-actions.ts redactUserEvents",
        {"redact_id": "str"},
    ),
    # Polled with the ids the two calls above answered.
    (
        "GET",
        f"{V1}/purge_history_status/{{purge_id}}",
        None,
        "synapse-actions.ts getPurgeHistoryStatus",
        {"status": "str"},
    ),
    (
        "GET",
        f"{V1}/user/redact_status/{{redact_id}}",
        None,
        "synapse-actions.ts getRedactStatus",
        {"status": "str"},
    ),
    (
        "GET",
        f"{V1}/scheduled_tasks?action_name=purge_history&resource_id={{room}}",
        None,
        "synapse.ts scheduled_tasks (filtered)",
        {
            "scheduled_tasks.0.id": "str",
            "scheduled_tasks.0.action": "str",
            "scheduled_tasks.0.status": "str",
            "scheduled_tasks.0.timestamp_ms": "int",
            "scheduled_tasks.0.resource_id": "str",
        },
    ),
    (
        "POST",
        f"{V1}/purge_media_cache?before_ts=31000000000",
        {},
        "synapse-actions.ts purgeRemoteMedia",
        {"deleted": "int"},
    ),
    (
        "POST",
        f"{V1}/media/delete?before_ts=31000000000&size_gt=0&keep_profiles=true",
        {},
        "synapse-actions.ts deleteMedia",
        {"deleted_media": "list", "total": "int"},
    ),
    (
        "DELETE",
        f"{V2}/rooms/{{room}}",
        {"purge": True},
        "synapse-actions.ts deleteRoom",
        {"delete_id": "str"},
    ),
]


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", str: "str", list: "list", dict: "dict"}.get(
        type(value), type(value).__name__
    )


def _at(body: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(body, list):
            body = body[int(key)] if len(body) > int(key) else KeyError(path)
        elif isinstance(body, dict):
            body = body.get(key, KeyError(path))
        if isinstance(body, KeyError):
            return body
    return body


async def _register_admin(http: aiohttp.ClientSession, base: str) -> str:
    """An admin made the way playbooks make one: shared-secret registration."""
    async with http.get(f"{base}{V1}/register") as resp:
        nonce = (await resp.json())["nonce"]
    message = "\x00".join([nonce, "boss", "boss password", "admin"]).encode()
    mac = hmac.new(SECRET.encode(), message, hashlib.sha1).hexdigest()
    body = {"nonce": nonce, "username": "boss", "password": "boss password", "admin": True,
            "mac": mac}  # fmt: skip
    async with http.post(f"{base}{V1}/register", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def _scenario(
    http: aiohttp.ClientSession, server: SynapseInstance | Homeserver
) -> dict[str, Any]:
    """The same data on either server: an admin, a user with a room, a message, an
    upload, a reported event and a reported user, and a second user."""
    base = client_url(server)
    token = await _register_admin(http, base)
    user = await User.register(http, server, "user")
    other = await User.register(http, server, "other")
    # Synapse gives new accounts their localpart as display name, we give none: the same
    # data needs it set.
    await user.ok("PUT", f"/profile/{user.user_id}/displayname", {"displayname": "User"})
    room = await user.create_room(preset="public_chat", name="Interop room")
    event_id = await user.say(room, "please report me")
    await user.ok("POST", f"/rooms/{room}/report/{event_id}", {"reason": "test", "score": -100})
    await user.ok("POST", f"/users/{other.user_id}/report", {"reason": "spam"})
    async with http.post(
        f"{base}/_matrix/media/v3/upload",
        data=b"interop bytes",
        headers={**user.headers, "Content-Type": "text/plain"},
    ) as resp:
        mxc = (await resp.json())["content_uri"]
    async with http.get(
        f"{base}{V1}/event_reports", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        report = (await resp.json())["event_reports"][0]["id"]
    server_name, media_id = mxc.removeprefix("mxc://").split("/")
    return {
        "base": base, "token": token, "user": user.user_id, "other": other.user_id,
        "room": room, "report": report, "server": server_name, "media": media_id,
        "event": event_id,
        "now": int(time.time() * 1000),
    }  # fmt: skip


def _fill(template: Any, ids: dict[str, Any]) -> Any:
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template[1:-1] in ids:
            return ids[template[1:-1]]  # a whole value keeps its type
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, ids) for v in template]
    return template


async def _replay(http: aiohttp.ClientSession, ids: dict[str, Any]) -> list[tuple[int, Any]]:
    """Every call in order; the ids of tasks started along the way fill later calls."""
    answers = []
    ids = dict(ids)
    for method, path, body, _, _ in CALLS:
        async with http.request(
            method,
            ids["base"] + _fill(path, ids),
            json=_fill(body, ids),
            headers={"Authorization": f"Bearer {ids['token']}"},
        ) as resp:
            answers.append((resp.status, await resp.json(content_type=None)))
        answer = answers[-1][1]
        for started in ("purge_id", "redact_id"):
            if isinstance(answer, dict) and started in answer:
                ids[started] = answer[started]
    return answers


async def test_ketesa_calls_answer_alike(synapse: SynapseInstance, our_servers: Any) -> None:
    ours = await our_servers(registration_shared_secret=SECRET)
    async with session() as http:
        theirs_ids = await _scenario(http, synapse)
        ours_ids = await _scenario(http, ours)
        theirs = await _replay(http, theirs_ids)
        mine = await _replay(http, ours_ids)
    problems = []
    for (method, path, _, source, fields), (t_status, t_body), (o_status, o_body) in zip(
        CALLS, theirs, mine, strict=True
    ):
        where = f"{method} {path} ({source})"
        if t_status != o_status:
            problems.append(f"{where}: Synapse {t_status}, ours {o_status}: {o_body}")
            continue
        for field, kind in fields.items():
            got = (_type(_at(t_body, field)), _type(_at(o_body, field)))
            if got != (kind, kind):
                problems.append(f"{where}: {field} is {got[0]} on Synapse, {got[1]} here")
    assert not problems, "\n".join(problems)
