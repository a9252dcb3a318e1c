"""OpenID tokens across implementations: Synapse offers no way to check another
server's token, so we check that our relying-party path (an unsigned federation GET,
as widgets and Element Call's token service make) reads Synapse's userinfo, and that a
token of ours answers in the same shape Synapse's does."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from tests.interop.clients import User, session
from tests.interop.conftest import OurServerFactory

pytestmark = pytest.mark.interop

USERINFO = "/_matrix/federation/v1/openid/userinfo"


async def test_openid_tokens_of_both_sides(
    synapse: SynapseInstance, our_servers: OurServerFactory
) -> None:
    ours: Homeserver = await our_servers()
    relying: Homeserver = await our_servers()
    async with session() as http:
        for server in (synapse, ours):
            user = await User.register(http, server, "oidc")
            grant = await user.ok("POST", f"/user/{quote(user.user_id)}/openid/request_token")
            info = await relying.remote_client.get_json(
                grant["matrix_server_name"],
                USERINFO,
                {"access_token": grant["access_token"]},
                signed=False,
            )
            assert info == {"sub": user.user_id}
