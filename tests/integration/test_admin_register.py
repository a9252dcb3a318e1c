"""Shared-secret registration at /_synapse/admin/v1/register, driven by Synapse's own
`register_new_matrix_user` (what playbooks run), and its refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from contrib.synapse_harness import ensure_synapse
from homeserver.services.admin.shared_secret import registration_mac
from tests.integration.conftest import login_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
PATH = "/_synapse/admin/v1/register"
SECRET = "a shared secret"


async def test_register_new_matrix_user_creates_an_admin(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(registration_shared_secret=SECRET)
    tool = ensure_synapse().parent / "register_new_matrix_user"
    url = f"http://127.0.0.1:{client.server.port}"
    proc = await asyncio.create_subprocess_exec(
        str(tool), "-u", "boss", "-p", "boss pw", "-a", "-k", SECRET, url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    session = await login_user(client, "boss", "boss pw")
    status, users = await admin_call(
        client, "GET", "/_synapse/admin/v2/users", session["access_token"]
    )
    assert status == 200
    assert {u["name"]: u["admin"] for u in users["users"]} == {"@boss:test.local": True}


async def test_nonce_and_mac_are_checked(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client(registration_shared_secret=SECRET)

    async def attempt(mac_secret: str, nonce: str | None = None, **extra: Any) -> tuple[int, Any]:
        if nonce is None:
            nonce = (await (await client.get(PATH)).json())["nonce"]
        body = {"nonce": nonce, "username": "u1", "password": "pw", "admin": False, **extra}
        body["mac"] = registration_mac(mac_secret, nonce, "u1", "pw", False, None)
        resp = await client.post(PATH, json=body)
        return resp.status, await resp.json()

    status, body = await attempt("wrong secret")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await attempt(SECRET, nonce="made-up")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    nonce = (await (await client.get(PATH)).json())["nonce"]
    status, body = await attempt(SECRET, nonce=nonce, displayname="User One")
    assert status == 200 and body["user_id"] == "@u1:test.local", body
    assert body["access_token"]
    # A nonce is good once.
    status, body = await attempt(SECRET, nonce=nonce)
    assert status == 400


async def test_refused_without_a_secret(homeserver_client: Callable[..., Any]) -> None:
    client: Client = await homeserver_client()
    resp = await client.get(PATH)
    assert resp.status == 400
