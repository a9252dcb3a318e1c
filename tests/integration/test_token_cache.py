"""Cached access tokens die everywhere as soon as they are deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homeserver.api.context import HOMESERVER
from tests.integration.conftest import CLIENT_V3, auth_header, make_user


async def test_token_deleted_elsewhere_is_refused(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    _, token = await make_user(client, "alice")
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(token))
    assert resp.status == 200  # now cached

    # Another worker process logs the device out: only the database knows.
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        await conn.execute("DELETE FROM access_tokens")
    for _ in range(100):
        resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(token))
        if resp.status == 401:
            break
        await asyncio.sleep(0.01)
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_logout_refuses_the_token_at_once(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    _, token = await make_user(client, "bob")
    assert (await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(token))).ok
    assert (await client.post(f"{CLIENT_V3}/logout", headers=auth_header(token))).status == 200
    resp = await client.get(f"{CLIENT_V3}/account/whoami", headers=auth_header(token))
    assert resp.status == 401
