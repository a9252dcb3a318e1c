"""Behind a load balancer every request comes from the balancer's address: with
`x_forwarded`, limits per client address apply to the address the balancer saw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import CLIENT_V3

LOGIN = {
    "type": "m.login.password",
    "identifier": {"type": "m.id.user", "user": "nobody"},
    "password": "wrong",
}
LIMITS = {"rate_limits.login.burst": 2, "rate_limits.login.per_second": 0.001}


async def _statuses(client: Any, forwarded: str, count: int) -> list[int]:
    headers = {"X-Forwarded-For": forwarded}
    return [
        (await client.post(f"{CLIENT_V3}/login", json=LOGIN, headers=headers)).status
        for _ in range(count)
    ]


async def test_login_limits_apply_per_forwarded_address(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client(x_forwarded=True, **LIMITS)
    assert await _statuses(client, "10.0.0.1", 3) == [403, 403, 429]
    # Another client behind the same balancer has its own bucket.
    assert await _statuses(client, "10.0.0.2", 2) == [403, 403]
    # What a client writes itself comes first; the balancer's entry decides.
    assert await _statuses(client, "10.0.0.2, 10.0.0.1", 1) == [429]


async def test_without_x_forwarded_the_header_is_ignored(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client(**LIMITS)
    assert await _statuses(client, "10.0.0.1", 2) == [403, 403]
    assert await _statuses(client, "10.0.0.2", 1) == [429]
