"""Server keys over real HTTP on loopback: our key server, fetching another instance's keys
directly and through a notary, our notary API, and refusing forged key responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from federation.builder import build_event
from federation.keys import SigningKey, encode_verify_key, generate_signing_key
from federation.pdu_checks import check_pdu
from federation.room_versions import KNOWN_ROOM_VERSIONS
from federation.signing import SignatureError, sign_json, verify_json
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.keyring import KeyRing, verify_key_response
from homeserver.storage.remote import server_keys
from tests.integration.peers import free_port, start_peer


async def get(hs: Homeserver, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{hs.server_name}{path}") as resp:
            return resp.status, await resp.json()


async def post(hs: Homeserver, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{hs.server_name}{path}", json=body) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def stub_key_server() -> AsyncIterator[Callable[[Any], str]]:
    """Factory: serve a fixed body at /_matrix/key/v2/server; returns the stub's name."""
    servers: list[TestServer] = []

    async def start(body_for: Any) -> str:
        port = free_port()
        name = f"127.0.0.1:{port}"

        async def keys(request: web.Request) -> web.Response:
            return web.json_response(body_for(name))

        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", keys)
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        return name

    yield start  # type: ignore[misc]
    for server in servers:
        await server.close()


async def test_our_key_response_is_self_signed(homeserver_client: Callable[..., Any]) -> None:
    hs = await start_peer(homeserver_client)
    status, body = await get(hs, "/_matrix/key/v2/server")
    assert status == 200
    keys, valid_until = verify_key_response(body, hs.server_name, now_ms())
    assert [k.key_id for k in keys] == [hs.signing_key.key_id]
    assert keys[0].verify_key == encode_verify_key(hs.signing_key.verify_key)
    assert now_ms() < valid_until <= now_ms() + 7 * 24 * 3600 * 1000
    assert body["old_verify_keys"] == {}


async def test_fetches_another_instance_keys_directly(
    homeserver_client: Callable[..., Any],
) -> None:
    a = await start_peer(homeserver_client)
    b = await start_peer(homeserver_client)
    key_id = b.signing_key.key_id
    found = await a.keyring.verify_keys_for(b.server_name, [key_id], now_ms())
    assert bytes(found[key_id].verify_key) == bytes(b.signing_key.verify_key)
    assert found[key_id].valid_until_ts > now_ms()

    # Stored: a fresh KeyRing on the same database answers without any network.
    async with a.db.pool.connection() as conn:
        assert key_id in await server_keys.get_keys(conn, b.server_name, [key_id])
    offline = KeyRing(a.db, a.remote_client, a.server_name, a.signing_key)
    offline.client = None  # type: ignore[assignment]  # any fetch would now fail loudly
    again = await offline.verify_keys_for(b.server_name, [key_id], now_ms())
    assert bytes(again[key_id].verify_key) == bytes(b.signing_key.verify_key)

    # The synchronous lookup form that pdu_checks and xmatrix take.
    lookup = await a.keyring.lookup({b.server_name: [key_id], a.server_name: ["ed25519:x"]}, 0)
    assert lookup(b.server_name, key_id) is not None
    assert lookup(a.server_name, "ed25519:x") is None


async def test_notary_answers_and_countersigns(homeserver_client: Callable[..., Any]) -> None:
    notary = await start_peer(homeserver_client)
    b = await start_peer(homeserver_client)

    status, body = await get(notary, f"/_matrix/key/v2/query/{b.server_name}")
    assert status == 200
    [response] = body["server_keys"]
    verify_key_response(response, b.server_name, now_ms())
    notary_lookup = await notary.keyring.lookup(
        {notary.server_name: [notary.signing_key.key_id]}, 0
    )
    verify_json(response, notary.server_name, notary_lookup)

    key_id = b.signing_key.key_id
    query = {
        "server_keys": {
            b.server_name: {key_id: {"minimum_valid_until_ts": now_ms()}},
            notary.server_name: {},
            "127.0.0.1:1": {},  # unreachable: left out
            "not a server name": {},
        }
    }
    status, body = await post(notary, "/_matrix/key/v2/query", query)
    assert status == 200
    names = sorted(r["server_name"] for r in body["server_keys"])
    assert names == sorted([b.server_name, notary.server_name])
    for response in body["server_keys"]:
        verify_key_response(response, response["server_name"], now_ms())
        verify_json(response, notary.server_name, notary_lookup)


BAD_QUERIES = [
    [],
    {"server_keys": []},
    {"server_keys": {"a.org": []}},
    {"server_keys": {f"s{i}.org": {} for i in range(101)}},
    {"server_keys": {"a.org": {f"ed25519:{i}": {} for i in range(101)}}},
]


async def test_notary_refuses_bad_queries(homeserver_client: Callable[..., Any]) -> None:
    hs = await start_peer(homeserver_client)
    for body in BAD_QUERIES:
        status, answer = await post(hs, "/_matrix/key/v2/query", body)
        assert status == 400, body
        assert answer["errcode"] == "M_BAD_JSON"
    for path in (
        "/_matrix/key/v2/query/bad%20name",
        "/_matrix/key/v2/query/a.org?minimum_valid_until_ts=x",
    ):
        status, answer = await get(hs, path)
        assert status == 400, path
        assert answer["errcode"] == "M_INVALID_PARAM"


async def test_fetches_through_a_notary_when_the_server_is_down(
    homeserver_client: Callable[..., Any],
) -> None:
    notary = await start_peer(homeserver_client)
    b = await start_peer(homeserver_client)
    await notary.keyring.verify_keys_for(b.server_name, [b.signing_key.key_id], now_ms())

    # A server whose name points where nobody listens, with the notary's copy of b's
    # response: only the notary can tell us its keys.
    c = await start_peer(
        homeserver_client, **{"federation.trusted_key_servers": [notary.server_name]}
    )
    ghost = f"127.0.0.1:{free_port()}"
    ghost_key = generate_signing_key()
    response = sign_json(
        {
            "server_name": ghost,
            "valid_until_ts": now_ms() + 3_600_000,
            "verify_keys": {ghost_key.key_id: {"key": encode_verify_key(ghost_key.verify_key)}},
        },
        ghost,
        ghost_key,
    )
    await notary.keyring._store(ghost, response)
    found = await c.keyring.verify_keys_for(ghost, [ghost_key.key_id], now_ms())
    assert bytes(found[ghost_key.key_id].verify_key) == bytes(ghost_key.verify_key)


def _self_signed(name: str, key: SigningKey | None = None, **changes: Any) -> dict[str, Any]:
    key = key or generate_signing_key()
    body = {
        "server_name": name,
        "valid_until_ts": now_ms() + 3_600_000,
        "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}},
    }
    signed = sign_json(body, name, key)
    signed.update(changes)
    return signed


def _signed_by_other_key(name: str) -> dict[str, Any]:
    listed, signer = generate_signing_key("listed"), generate_signing_key("signer")
    body = {
        "server_name": name,
        "valid_until_ts": now_ms() + 3_600_000,
        "verify_keys": {listed.key_id: {"key": encode_verify_key(listed.verify_key)}},
    }
    signed = sign_json(body, name, signer)
    signed["signatures"][name][listed.key_id] = signed["signatures"][name].pop(signer.key_id)
    return signed


FORGERIES: dict[str, Callable[[str], Any]] = {
    "wrong-server-name": lambda name: _self_signed("evil.example.org"),
    "altered-after-signing": lambda name: {
        **_self_signed(name),
        "valid_until_ts": now_ms() + 10**9,
    },
    "signature-by-unlisted-key": _signed_by_other_key,
    "unsigned": lambda name: {**_self_signed(name), "signatures": {}},
    "no-keys": lambda name: {"server_name": name},
    "not-an-object": lambda name: ["not", "an", "object"],
}


async def test_forged_key_responses_are_refused(
    homeserver_client: Callable[..., Any], stub_key_server: Callable[[Any], Any]
) -> None:
    hs = await start_peer(homeserver_client)
    for why, forge in FORGERIES.items():
        name = await stub_key_server(forge)
        forged = forge(name)
        key_ids = list(forged.get("verify_keys", {})) if isinstance(forged, dict) else []
        found = await hs.keyring.verify_keys_for(name, key_ids or ["ed25519:x"], now_ms())
        assert found == {}, why
        async with hs.db.pool.connection() as conn:
            assert await server_keys.get_response(conn, name) is None, why


async def test_notary_answers_it_did_not_sign_are_refused(
    homeserver_client: Callable[..., Any],
) -> None:
    """A notary whose countersignature does not verify, or that answers about another
    server, gives us nothing."""
    port = free_port()
    notary_name = f"127.0.0.1:{port}"
    notary_key, impostor = generate_signing_key("real"), generate_signing_key("real")
    ghost = f"127.0.0.1:{free_port()}"

    async def own_keys(request: web.Request) -> web.Response:
        return web.json_response(_self_signed(notary_name, key=notary_key))

    async def query(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "server_keys": [
                    sign_json(_self_signed(ghost), notary_name, impostor),
                    sign_json(_self_signed("other.example.org"), notary_name, notary_key),
                ]
            }
        )

    app = web.Application()
    app.router.add_get("/_matrix/key/v2/server", own_keys)
    app.router.add_post("/_matrix/key/v2/query", query)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        c = await start_peer(homeserver_client, **{"federation.trusted_key_servers": [notary_name]})
        assert await c.keyring.verify_keys_for(ghost, ["ed25519:x"], now_ms()) == {}
        assert await c.keyring.verify_keys_for(notary_name, ["ed25519:real"], now_ms())
        async with c.db.pool.connection() as conn:
            assert await server_keys.get_response(conn, ghost) is None
            assert await server_keys.get_response(conn, "other.example.org") is None
    finally:
        await server.close()


async def test_pdu_checks_with_fetched_keys(homeserver_client: Callable[..., Any]) -> None:
    """The prefetch-then-lookup adapter gives `check_pdu` the sender server's keys."""
    a = await start_peer(homeserver_client)
    b = await start_peer(homeserver_client)
    version = KNOWN_ROOM_VERSIONS["12"]
    event = build_event(
        version,
        b.signing_key,
        event_type="m.room.message",
        sender=f"@bob:{b.server_name}",
        content={"body": "hi"},
        prev_events=["$" + "a" * 43],
        auth_events=["$" + "b" * 43],
        depth=2,
        origin_server_ts=now_ms(),
        room_id="!" + "c" * 43,
    )
    lookup = await a.keyring.lookup_for_pdus([event.pdu, {"garbage": True}], version)
    assert check_pdu(event.pdu, version, lookup).redacted is False

    forged = {**event.pdu, "content": {"body": "changed"}}
    forged["hashes"] = event.pdu["hashes"]
    assert check_pdu(forged, version, lookup).redacted is True  # hash mismatch: redact
    stranger = build_event(
        version,
        generate_signing_key(b.signing_key.version),
        event_type="m.room.message",
        sender=f"@bob:{b.server_name}",
        content={"body": "hi"},
        prev_events=[],
        auth_events=[],
        depth=3,
        origin_server_ts=now_ms(),
        room_id="!" + "c" * 43,
    )
    with pytest.raises(SignatureError):
        check_pdu(stranger.pdu, version, await a.keyring.lookup_for_pdus([stranger.pdu], version))
