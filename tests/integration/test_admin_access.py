"""One admin check for every admin route: the route table is walked, and each admin
route refuses an anonymous caller (401) and a user who is not a server admin (403)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from homeserver.api.admin.access import is_admin_path, is_public
from tests.integration.conftest import auth_header, make_user

Client = TestClient[Any, Any]
_PLACEHOLDER = re.compile(r"\{([^}:]+)(:[^}]*)?\}")
# What each path parameter is filled with: real-looking ids, so a handler that forgot
# nothing would have found something to act on.
_VALUES = {
    "user_id": "@root:test.local",
    "room_id": "!room:test.local",
    "room_id_or_alias": "!room:test.local",
    "server_name": "test.local",
    "media_id": "abcdef",
    "destination": "other.example",
}


def _concrete(path: str) -> str:
    return _PLACEHOLDER.sub(lambda m: _VALUES.get(m.group(1), "x"), path)


def admin_routes(client: Client) -> list[tuple[str, str]]:
    """Every (method, path) of the app's routes behind the admin check."""
    found = []
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "OPTIONS"):
            continue
        if is_admin_path(path) and not is_public(route.handler):
            found.append((route.method, _concrete(path)))
    return found


async def test_every_admin_route_refuses_anonymous_and_non_admins(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    await make_user(client, "root", admin=True)
    _, user_token = await make_user(client, "mallory")
    routes = admin_routes(client)
    # The table holds the admin API, users and rooms and tokens among it.
    paths = {path for _, path in routes}
    assert "/_synapse/admin/v2/users" in paths
    assert "/_synapse/admin/v1/rooms" in paths
    assert "/_synapse/admin/v1/registration_tokens" in paths
    for method, path in routes:
        resp = await client.request(method, path, json={})
        body = await resp.json()
        assert (resp.status, body.get("errcode")) == (401, "M_MISSING_TOKEN"), (method, path)
        resp = await client.request(method, path, json={}, headers=auth_header(user_token))
        body = await resp.json()
        assert (resp.status, body.get("errcode")) == (403, "M_FORBIDDEN"), (method, path)
