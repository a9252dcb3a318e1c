"""Federation never connects to private or loopback addresses unless allowed."""

from __future__ import annotations

import pytest

from federation.keys import generate_signing_key
from homeserver.services.remote.client import FederationClient, Unreachable, address_allowed
from tests.integration.peers import free_port


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("172.16.5.4", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("not an address", False),
    ],
)
def test_only_public_addresses_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(address, []) is allowed


async def test_requests_to_loopback_are_refused_unless_whitelisted() -> None:
    port = free_port()  # nothing listens there
    for destination in (f"127.0.0.1:{port}", f"localhost:{port}"):
        client = FederationClient("us.example", generate_signing_key(), use_tls=False)
        await client.start()
        try:
            with pytest.raises(Unreachable, match="may not use"):
                await client.get_json(destination, "/_matrix/federation/v1/version")
        finally:
            await client.close()

        allowed = FederationClient(
            "us.example",
            generate_signing_key(),
            use_tls=False,
            allowed_ranges=["127.0.0.0/8", "::1/128"],
        )
        await allowed.start()
        try:
            with pytest.raises(Unreachable) as refused:
                await allowed.get_json(destination, "/_matrix/federation/v1/version")
            assert "may not use" not in str(refused.value)
        finally:
            await allowed.close()
