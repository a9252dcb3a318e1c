"""MatrixRTC discovery: where Element Call finds the operator's LiveKit service, in the
client well-known (Synapse's `extra_well_known_client_content`) and the MSC4143
transports endpoint (Synapse's `matrix_rtc.transports`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import auth_header, call, make_user

FOCUS = {"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt"}
TRANSPORTS = "/unstable/org.matrix.msc4143/rtc/transports"


async def test_extra_well_known_content_is_merged(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        public_baseurl="https://matrix.example.org",
        extra_well_known_client_content={
            "org.matrix.msc4143.rtc_foci": [FOCUS],
            "io.element.e2ee": {"default": True},
        },
    )
    resp = await client.get("/.well-known/matrix/client")
    assert resp.status == 200
    assert await resp.json() == {
        "m.homeserver": {"base_url": "https://matrix.example.org/"},
        "org.matrix.msc4143.rtc_foci": [FOCUS],
        "io.element.e2ee": {"default": True},
    }


async def test_transports_endpoint_and_foci_from_it(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"matrix_rtc.transports": [FOCUS]})
    _, token = await make_user(client, "alice")
    status, body = await call(client, "GET", TRANSPORTS, headers=auth_header(token))
    assert (status, body) == (200, {"rtc_transports": [FOCUS]})
    status, _ = await call(client, "GET", TRANSPORTS)
    assert status == 401
    # Without an explicit rtc_foci, the well-known offers the same transports.
    well_known = await (await client.get("/.well-known/matrix/client")).json()
    assert well_known["org.matrix.msc4143.rtc_foci"] == [FOCUS]
    plain = await homeserver_client()
    _, token = await make_user(plain, "bob")
    status, body = await call(plain, "GET", TRANSPORTS, headers=auth_header(token))
    assert (status, body) == (200, {"rtc_transports": []})
    assert (
        "org.matrix.msc4143.rtc_foci"
        not in await (await plain.get("/.well-known/matrix/client")).json()
    )
