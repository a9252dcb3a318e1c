"""OpenID tokens: a user of one of our servers proves who they are to a relying party,
here another of our servers asking over federation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.accounts.auth import hash_token
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from homeserver.storage.accounts import openid
from tests.integration.conftest import auth_header, call, make_user
from tests.integration.peers import PEER_CONFIG, free_port, start_peer

USERINFO = "/_matrix/federation/v1/openid/userinfo"


async def _peer_client(homeserver_client: Callable[..., Any]) -> TestClient[Any, Any]:
    port = free_port()
    client: TestClient[Any, Any] = await homeserver_client(
        server_name=f"127.0.0.1:{port}", port=port, **PEER_CONFIG
    )
    return client


async def test_token_verified_by_another_server(homeserver_client: Callable[..., Any]) -> None:
    issuer = await _peer_client(homeserver_client)
    relying: Homeserver = await start_peer(homeserver_client)
    user_id, token = await make_user(issuer, "alice")
    status, body = await call(
        issuer,
        "POST",
        f"/v3/user/{user_id}/openid/request_token",
        {},
        headers=auth_header(token),
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    server_name = issuer.server.app[HOMESERVER].server_name
    assert body["matrix_server_name"] == server_name
    # The relying party reaches the issuer by its server name, unsigned, as a widget would.
    info = await relying.remote_client.get_json(
        body["matrix_server_name"], USERINFO, {"access_token": body["access_token"]}, signed=False
    )
    assert info == {"sub": user_id}
    with pytest.raises(RequestFailed) as refused:
        await relying.remote_client.get_json(
            server_name, USERINFO, {"access_token": "not-a-token"}, signed=False
        )
    assert (refused.value.status, refused.value.errcode) == (401, "M_UNKNOWN_TOKEN")


async def test_tokens_only_for_oneself_and_expire(open_client: TestClient[Any, Any]) -> None:
    alice, token = await make_user(open_client, "alice")
    bob, _ = await make_user(open_client, "bob")
    headers = auth_header(token)
    status, body = await call(
        open_client, "POST", f"/r0/user/{bob}/openid/request_token", {}, headers=headers
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await call(open_client, "POST", f"/v3/user/{alice}/openid/request_token", {})
    assert status == 401
    resp = await open_client.get(USERINFO)
    assert resp.status == 401
    # A token past its lifetime is refused like an unknown one.
    hs = open_client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        await openid.insert_token(conn, hash_token("old"), alice, now_ms() - 1, now_ms() - 10)
    resp = await open_client.get(USERINFO, params={"access_token": "old"})
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
