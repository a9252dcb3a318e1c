"""`GET /capabilities`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from federation.room_versions import KNOWN_ROOM_VERSIONS
from tests.integration.conftest import CLIENT_V3, auth_header, make_user


async def test_capabilities(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(default_room_version="11")
    _, token = await make_user(client, "alice")
    resp = await client.get(f"{CLIENT_V3}/capabilities", headers=auth_header(token))
    assert resp.status == 200
    caps = (await resp.json())["capabilities"]
    assert caps["m.room_versions"] == {
        "default": "11",
        "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
    }
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert caps["m.get_login_token"] == {"enabled": True}
    # Any field may be set: no `allowed` list to restrict it.
    assert caps["m.profile_fields"] == {"enabled": True}


async def test_capabilities_legacy_prefix_and_auth(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    _, token = await make_user(client, "alice")
    resp = await client.get("/_matrix/client/r0/capabilities", headers=auth_header(token))
    assert resp.status == 200
    assert (await resp.json())["capabilities"]["m.room_versions"]["default"] == "12"
    resp = await client.get(f"{CLIENT_V3}/capabilities")
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    resp = await client.get(f"{CLIENT_V3}/capabilities", headers=auth_header("unknown"))
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
