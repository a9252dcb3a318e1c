"""End-to-end encryption keys of remote users: /keys/query and /keys/claim for them go
to their servers (all servers at once, within the client's timeout). Other servers'
`/user/keys/query` and `/user/keys/claim` are answered in services/remote/served_keys.py.

A server that fails is reported in `failures` under its name; the others' answers are
used. Device lists of remote users who share a room with ours come from the cache in
services/remote/device_lists.py (filled from `/user/devices` when missing or stale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from federation.identifiers import server_name_of
from federation.types import JsonDict
from homeserver.services.remote.client import FederationClient, FederationError, RequestFailed
from homeserver.services.remote.device_lists import RemoteDeviceLists
from homeserver.storage.core.pool import Database
from homeserver.storage.remote import room_servers

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000
QUERY_PATH = "/_matrix/federation/v1/user/keys/query"
CLAIM_PATH = "/_matrix/federation/v1/user/keys/claim"


def timeout_seconds(body: Mapping[str, Any]) -> float:
    """The request's `timeout` (ms), bounded; the spec's default is 10 seconds."""
    value = body.get("timeout", DEFAULT_TIMEOUT_MS)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        value = DEFAULT_TIMEOUT_MS
    return min(value, MAX_TIMEOUT_MS) / 1000


def _failure(server: str, exc: Exception) -> JsonDict:
    if isinstance(exc, RequestFailed):
        return {"errcode": exc.errcode or "M_UNKNOWN", "error": f"{server}: HTTP {exc.status}"}
    return {"errcode": "M_UNAVAILABLE", "error": f"Cannot reach {server}"}


def _own_users(answer: Any, field: str, server: str) -> dict[str, Any]:
    """`answer[field]` limited to users of `server` (a server speaks for its own users)."""
    part = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(part, dict):
        return {}
    return {
        user_id: value
        for user_id, value in part.items()
        if server_name_of(user_id, "@") == server and isinstance(value, dict)
    }


class RemoteKeys:
    def __init__(
        self,
        db: Database,
        device_lists: RemoteDeviceLists,
        client: FederationClient,
        server_name: str,
    ) -> None:
        self.db = db
        self.device_lists = device_lists
        self.client = client
        self.server_name = server_name

    async def _each_server(
        self,
        by_server: Mapping[str, T],
        ask: Callable[[str, T], Awaitable[JsonDict]],
        timeout_s: float,
    ) -> tuple[list[JsonDict], dict[str, JsonDict]]:
        """Ask every server at once; (answers, failures by server)."""
        servers = sorted(by_server)

        async def one(server: str) -> JsonDict:
            async with asyncio.timeout(timeout_s):
                return await ask(server, by_server[server])

        results = await asyncio.gather(*(one(s) for s in servers), return_exceptions=True)
        answers: list[JsonDict] = []
        failures: dict[str, JsonDict] = {}
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, FederationError | TimeoutError):
                failures[server] = _failure(server, result)
            elif isinstance(result, BaseException):
                log.error("keys request to %s failed", server, exc_info=result)
                failures[server] = _failure(server, RuntimeError())
            else:
                answers.append(result)
        return answers, failures

    async def query(
        self, wanted: Mapping[str, list[str]], timeout_s: float
    ) -> tuple[JsonDict, dict[str, JsonDict]]:
        """Keys of remote users ({user: [device ids] or [] for all}): (a /keys/query answer
        part with device_keys, master_keys, self_signing_keys; failures by server)."""
        out: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        fresh, cached = await self.device_lists.cached_keys(list(wanted))
        _merge(out, cached, {u: wanted[u] for u in fresh})
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, device_ids in wanted.items():
            server = server_name_of(user_id, "@")
            if user_id not in fresh and server is not None:
                by_server.setdefault(server, {})[user_id] = device_ids
        answers, failures = await self._each_server(
            by_server, lambda s, users: self._query_server(s, users, timeout_s), timeout_s
        )
        for answer in answers:
            _merge(out, answer, None)
        return out, failures

    async def _query_server(
        self, server: str, users: dict[str, list[str]], timeout_s: float
    ) -> JsonDict:
        """Users sharing a room with ours get their whole list fetched and cached (their
        server then keeps us told of changes); the others are asked for directly."""
        out: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        async with self.db.pool.connection() as conn:
            tracked = await room_servers.tracked_by_us(conn, list(users), self.server_name)
        if tracked:
            lists = self.device_lists
            await asyncio.gather(*(lists.resync(server, u, timeout_s) for u in sorted(tracked)))
            fresh, cached = await lists.cached_keys(sorted(tracked))
            _merge(out, cached, {u: users[u] for u in fresh})
        rest = {u: d for u, d in users.items() if u not in tracked}
        if not rest:
            return out
        answer = await self.client.post_json(
            server, QUERY_PATH, {"device_keys": rest}, time_limit=timeout_s
        )
        found: JsonDict = {field: _own_users(answer, field, server) for field in out}
        found["device_keys"] = {
            user_id: {
                device_id: keys
                for device_id, keys in devices.items()
                if isinstance(keys, dict)
                and keys.get("user_id") == user_id
                and keys.get("device_id") == device_id
            }
            for user_id, devices in found["device_keys"].items()
        }
        _merge(out, found, rest)
        return out

    async def claim(
        self, wanted: Mapping[str, Mapping[str, str]], timeout_s: float
    ) -> tuple[dict[str, JsonDict], dict[str, JsonDict]]:
        """One-time keys of remote users' devices: (claimed by user, failures by server)."""
        by_server: dict[str, dict[str, Mapping[str, str]]] = {}
        for user_id, by_device in wanted.items():
            server = server_name_of(user_id, "@")
            if server is not None:
                by_server.setdefault(server, {})[user_id] = by_device

        async def ask(server: str, users: dict[str, Mapping[str, str]]) -> JsonDict:
            answer = await self.client.post_json(
                server, CLAIM_PATH, {"one_time_keys": users}, time_limit=timeout_s
            )
            claimed = _own_users(answer, "one_time_keys", server)
            return {
                user_id: {d: k for d, k in keys.items() if d in users.get(user_id, {})}
                for user_id, keys in claimed.items()
                if user_id in users
            }

        answers, failures = await self._each_server(by_server, ask, timeout_s)
        claimed: dict[str, JsonDict] = {}
        for answer in answers:
            claimed.update(answer)
        return claimed, failures


def _merge(out: JsonDict, part: JsonDict, devices_wanted: Mapping[str, list[str]] | None) -> None:
    """Add a query answer part to `out`; with `devices_wanted`, keep only the devices each
    user was asked for (all when the list is empty)."""
    for user_id, devices in part.get("device_keys", {}).items():
        wanted = devices_wanted.get(user_id) if devices_wanted is not None else None
        if devices_wanted is not None and user_id not in devices_wanted:
            continue
        out["device_keys"][user_id] = {
            d: k for d, k in devices.items() if not wanted or d in wanted
        }
    for field in ("master_keys", "self_signing_keys"):
        for user_id, key in part.get(field, {}).items():
            if devices_wanted is None or user_id in devices_wanted:
                out[field][user_id] = key
