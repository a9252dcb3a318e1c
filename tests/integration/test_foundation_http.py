"""The foundation endpoints over real HTTP: discovery, keys, errors, CORS, limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import signedjson.key
import signedjson.sign

from federation import unpadded_base64


async def test_versions_lists_spec_versions(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    resp = await client.get("/_matrix/client/versions")
    assert resp.status == 200
    body = await resp.json()
    assert "v1.1" in body["versions"]
    assert "v1.19" in body["versions"]
    assert isinstance(body["unstable_features"], dict)


async def test_well_known_client_and_server(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(
        public_baseurl="https://matrix.example.org", **{"well_known.server": "fed.example.org:443"}
    )
    body = await (await client.get("/.well-known/matrix/client")).json()
    assert body == {"m.homeserver": {"base_url": "https://matrix.example.org/"}}
    body = await (await client.get("/.well-known/matrix/server")).json()
    assert body == {"m.server": "fed.example.org:443"}


async def test_well_known_server_absent_without_delegation(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client()
    resp = await client.get("/.well-known/matrix/server")
    assert resp.status == 404
    assert (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_server_key_is_self_signed(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    resp = await client.get("/_matrix/key/v2/server")
    assert resp.status == 200
    body = await resp.json()
    assert body["server_name"] == "test.local"
    assert body["valid_until_ts"] > time.time() * 1000
    assert body["old_verify_keys"] == {}
    [(key_id, key)] = body["verify_keys"].items()
    assert key_id.startswith("ed25519:")
    verify_key = signedjson.key.decode_verify_key_bytes(key_id, unpadded_base64.decode(key["key"]))
    signedjson.sign.verify_signed_json(body, "test.local", verify_key)
    # Tampering with the signed body must break the signature.
    body["valid_until_ts"] += 1
    try:
        signedjson.sign.verify_signed_json(body, "test.local", verify_key)
    except signedjson.sign.SignatureVerifyException:
        pass
    else:
        raise AssertionError("a modified key response still verified")


async def test_federation_version(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    body = await (await client.get("/_matrix/federation/v1/version")).json()
    assert body["server"]["name"] == "homeserver"
    assert body["server"]["version"]


async def test_unknown_endpoint_is_unrecognized(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    resp = await client.get("/_matrix/client/v3/no_such_thing")
    assert resp.status == 404
    assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    assert resp.headers["Content-Type"].startswith("application/json")


async def test_wrong_method_is_405_unrecognized(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client()
    resp = await client.post("/_matrix/client/versions", json={})
    assert resp.status == 405
    assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_cors_headers_on_responses_and_preflight(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client()
    resp = await client.get("/_matrix/client/versions", headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await client.options(
        "/_matrix/client/v3/login",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    # Error responses carry CORS headers too, or browsers hide the error from the client.
    resp = await client.get("/_matrix/client/v3/no_such_thing")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_request_body_limit(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(max_request_size=4096)
    resp = await client.put("/_matrix/client/v3/anything", data=b"x" * 10_000)
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
