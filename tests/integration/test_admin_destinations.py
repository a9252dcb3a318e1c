"""Federation destinations in the admin API: a server we fail to reach is listed with
when it started failing and its retry state; resetting the connection clears it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.api.context import HOMESERVER
from homeserver.services.core.clock import now_ms
from homeserver.services.remote.client import Unreachable
from tests.integration.conftest import make_user
from tests.integration.test_admin_users import admin_call

Client = TestClient[Any, Any]
PREFIX = "/_synapse/admin/v1/federation/destinations"
# Nothing listens there: connections are refused at once.
DOWN = "127.0.0.1:9"


async def test_failing_destination_is_listed_and_reset(
    homeserver_client: Callable[..., Any],
) -> None:
    client: Client = await homeserver_client(**{"federation.use_tls": False})
    _, admin_token = await make_user(client, "root", admin=True)
    hs = client.server.app[HOMESERVER]
    await hs.remote_sender.send_edu(DOWN, "m.typing", {"room_id": "!r:test.local"})
    found: dict[str, Any] = {}
    for _ in range(100):
        status, listing = await admin_call(client, "GET", PREFIX, admin_token)
        assert status == 200
        found = {d["destination"]: d for d in listing["destinations"]}
        if found.get(DOWN, {}).get("failure_ts"):
            break
        await asyncio.sleep(0.1)
    one = found[DOWN]
    assert isinstance(one["failure_ts"], int) and one["retry_interval"] > 0
    assert one["retry_last_ts"] >= one["failure_ts"]
    status, detail = await admin_call(client, "GET", f"{PREFIX}/{DOWN}", admin_token)
    assert detail == one
    status, rooms = await admin_call(client, "GET", f"{PREFIX}/{DOWN}/rooms", admin_token)
    assert (status, rooms["rooms"], rooms["total"]) == (200, [], 0)
    status, _ = await admin_call(client, "POST", f"{PREFIX}/{DOWN}/reset_connection", admin_token)
    assert status == 200
    # The reset cleared the failure streak (failure_ts stays while failures go on); the
    # retry that follows starts a new one.
    for _ in range(100):
        status, detail = await admin_call(client, "GET", f"{PREFIX}/{DOWN}", admin_token)
        if detail["failure_ts"] and detail["failure_ts"] > one["failure_ts"]:
            break
        await asyncio.sleep(0.1)
    assert detail["failure_ts"] > one["failure_ts"]
    status, body = await admin_call(client, "GET", f"{PREFIX}/unknown.example", admin_token)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_any_request_that_fails_lists_the_server(
    homeserver_client: Callable[..., Any],
) -> None:
    """Not only transactions: a profile lookup, a join, a key fetch that cannot reach a
    server lists it with when its failures began."""
    client: Client = await homeserver_client(**{"federation.use_tls": False})
    _, admin_token = await make_user(client, "root", admin=True)
    hs = client.server.app[HOMESERVER]
    with pytest.raises(Unreachable):
        await hs.remote_client.get_json(DOWN, "/_matrix/federation/v1/version")
    for _ in range(100):
        status, detail = await admin_call(client, "GET", f"{PREFIX}/{DOWN}", admin_token)
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and isinstance(detail["failure_ts"], int), detail
    # It backs off from the server, as the sender's own failures do.
    assert detail["retry_interval"] > 0, detail
    assert detail["retry_last_ts"] >= detail["failure_ts"], detail
    # A request during the backoff is still tried (not refused), and does not make the
    # running backoff longer; one after it doubles it.
    tried_at = now_ms()
    with pytest.raises(Unreachable):
        await hs.remote_client.get_json(DOWN, "/_matrix/federation/v1/version")
    await asyncio.sleep(0.2)
    status, again = await admin_call(client, "GET", f"{PREFIX}/{DOWN}", admin_token)
    if tried_at < detail["retry_last_ts"] + detail["retry_interval"]:
        assert (status, again) == (200, detail)
    else:  # a loaded machine took longer than the first backoff
        assert again["retry_interval"] == 2 * detail["retry_interval"], again
