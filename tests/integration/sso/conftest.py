"""Fixtures of the single sign-on tests: two OpenID providers (one per test module),
and a homeserver to configure for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.sso.op import OpenIdProvider, Setup


@pytest.fixture(scope="module")
async def op(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OpenIdProvider]:
    """A provider that puts the user's claims in the id token (as Keycloak does)."""
    provider = OpenIdProvider(tmp_path_factory.mktemp("op"), {})
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
async def op2(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OpenIdProvider]:
    """A second provider, giving claims only at its userinfo endpoint."""
    provider = OpenIdProvider(tmp_path_factory.mktemp("op2"), {}, conform_id_token_claims=True)
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def setup(homeserver_client: Callable[..., Any]) -> Setup:
    return Setup(homeserver_client)
