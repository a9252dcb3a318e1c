"""X-Matrix authentication of inbound federation requests, between two of our instances
over real HTTP: the receiver fetches the sender's key from the sender itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.keys import generate_signing_key
from federation.xmatrix import sign_request
from homeserver.api.federation.auth import require_server
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from tests.integration import conftest
from tests.integration.peers import start_peer

ECHO = "/_matrix/federation/v1/test_echo"


async def echo(request: web.Request) -> web.Response:
    """Stands in for the federation endpoints to come: who sent what."""
    origin = await require_server(request)
    raw = await request.read()
    return web.json_response({"origin": origin, "content": json.loads(raw) if raw else None})


@pytest.fixture
def with_echo_route(monkeypatch: pytest.MonkeyPatch) -> None:
    build_app = conftest.build_app

    def build_with_echo(hs: Homeserver) -> web.Application:
        app = build_app(hs)
        app.router.add_route("*", ECHO + "{tail:.*}", echo)
        return app

    monkeypatch.setattr(conftest, "build_app", build_with_echo)


@pytest.fixture
async def pair(
    homeserver_client: Callable[..., Any], with_echo_route: None
) -> tuple[Homeserver, Homeserver]:
    return await start_peer(homeserver_client), await start_peer(homeserver_client)


async def raw(
    receiver: Homeserver,
    uri: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, f"http://{receiver.server_name}{uri}", headers=headers, data=body
        ) as resp:
            return resp.status, await resp.json()


async def test_signed_requests_are_accepted(pair: tuple[Homeserver, Homeserver]) -> None:
    a, b = pair
    answer = await a.remote_client.get_json(b.server_name, ECHO, {"q": "a b/c", "n": ["1", "2"]})
    assert answer == {"origin": a.server_name, "content": None}
    content = {"hello": ["world", 1, {"ü": None}]}
    answer = await a.remote_client.put_json(b.server_name, ECHO + "/%24ev%3Ax", content)
    assert answer == {"origin": a.server_name, "content": content}
    # And the other way round.
    answer = await b.remote_client.post_json(a.server_name, ECHO, {})
    assert answer["origin"] == b.server_name


async def test_unsigned_federation_routes(pair: tuple[Homeserver, Homeserver]) -> None:
    a, _ = pair
    assert (await raw(a, "/_matrix/federation/v1/version"))[0] == 200
    status, body = await raw(a, "/_matrix/federation/v1/no_such_thing")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


async def test_bad_requests_are_refused(pair: tuple[Homeserver, Homeserver]) -> None:
    a, b = pair

    def signed(
        uri: str, *, destination: str = b.server_name, content: Any = None, **kw: Any
    ) -> str:
        return sign_request(
            kw.get("method", "GET"),
            uri,
            kw.get("origin", a.server_name),
            destination,
            kw.get("key", a.signing_key),
            content,
        )

    refusals: list[tuple[str, dict[str, Any]]] = [
        ("missing header", {}),
        ("bearer token", {"headers": {"Authorization": "Bearer abc"}}),
        ("garbage", {"headers": {"Authorization": 'X-Matrix origin="a'}}),
        ("wrong destination", {"headers": {"Authorization": signed(ECHO, destination="x.org")}}),
        ("other uri signed", {"headers": {"Authorization": signed(ECHO + "?a=1")}}),
        ("other method signed", {"headers": {"Authorization": signed(ECHO, method="PUT")}}),
        (
            "body not signed",
            {
                "method": "PUT",
                "body": b'{"a": 1}',
                "headers": {"Authorization": signed(ECHO, method="PUT")},
            },
        ),
        (
            "unknown key",
            {"headers": {"Authorization": signed(ECHO, key=generate_signing_key("nope"))}},
        ),
        (
            "forged key",  # right key id, wrong key
            {
                "headers": {
                    "Authorization": signed(ECHO, key=generate_signing_key(a.signing_key.version))
                }
            },
        ),
        (
            "unreachable origin",
            {"headers": {"Authorization": signed(ECHO, origin="127.0.0.1:1")}},
        ),
    ]
    for why, request in refusals:
        status, body = await raw(b, ECHO, **request)
        assert (status, body.get("errcode")) == (401, "M_UNAUTHORIZED"), why

    headers = {"Authorization": signed(ECHO, method="PUT")}
    status, body = await raw(b, ECHO, method="PUT", body=b"{not json", headers=headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")

    # The client maps the refusal to an exception carrying status and errcode.
    stranger = generate_signing_key()
    a.remote_client.signing_key = stranger
    with pytest.raises(RequestFailed) as refused:
        await a.remote_client.get_json(b.server_name, ECHO)
    assert (refused.value.status, refused.value.errcode) == (401, "M_UNAUTHORIZED")
