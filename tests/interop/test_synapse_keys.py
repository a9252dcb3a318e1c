"""Server keys and request signing between Synapse and us, over TLS on loopback."""

from __future__ import annotations

import pytest

from contrib.synapse_harness import SynapseInstance
from federation.keys import encode_verify_key
from federation.signing import verify_json
from homeserver.services.core.clock import now_ms
from homeserver.services.homeserver import Homeserver
from homeserver.services.remote.client import RequestFailed
from homeserver.services.remote.keyring import verify_key_response

pytestmark = pytest.mark.interop


async def test_we_fetch_and_verify_synapse_keys(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    assert synapse.signing_key is not None
    key_id = synapse.signing_key.key_id
    found = await our_server.keyring.verify_keys_for(synapse.server_name, [key_id], now_ms())
    assert bytes(found[key_id].verify_key) == bytes(synapse.signing_key.verify_key)
    assert found[key_id].valid_until_ts > now_ms()


async def test_synapse_fetches_our_keys(synapse: SynapseInstance, our_server: Homeserver) -> None:
    """Synapse's notary API fetches our keys from us (over TLS) and countersigns them."""
    key_id = our_server.signing_key.key_id
    answer = await our_server.remote_client.post_json(
        synapse.server_name,
        "/_matrix/key/v2/query",
        {"server_keys": {our_server.server_name: {key_id: {"minimum_valid_until_ts": now_ms()}}}},
        signed=False,
    )
    [response] = answer["server_keys"]
    keys, _ = verify_key_response(response, our_server.server_name, now_ms())
    assert {k.key_id: k.verify_key for k in keys} == {
        our_server.signing_key.key_id: encode_verify_key(our_server.signing_key.verify_key)
    }
    assert synapse.signing_key is not None
    lookup = await our_server.keyring.lookup({synapse.server_name: [synapse.signing_key.key_id]}, 0)
    verify_json(response, synapse.server_name, lookup)


async def test_synapse_accepts_our_signed_requests(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    """A signed query reaches Synapse's handler (404 for an unknown user), where a bad
    signature would have been 401."""
    with pytest.raises(RequestFailed) as refused:
        await our_server.remote_client.get_json(
            synapse.server_name,
            "/_matrix/federation/v1/query/profile",
            {"user_id": f"@nobody:{synapse.server_name}"},
        )
    assert (refused.value.status, refused.value.errcode) == (404, "M_NOT_FOUND")

    our_server.remote_client.signing_key = type(our_server.signing_key)(
        our_server.signing_key.version, type(our_server.signing_key.key)(b"\x01" * 32)
    )
    with pytest.raises(RequestFailed) as forged:
        await our_server.remote_client.get_json(
            synapse.server_name,
            "/_matrix/federation/v1/query/profile",
            {"user_id": f"@somebody:{synapse.server_name}"},
        )
    assert forged.value.status == 401
