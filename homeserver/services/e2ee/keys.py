"""End-to-end encryption keys of devices: upload, query, claim, and what /sync reports
about them (device-list changes, one-time key counts, unused fallback keys).

The server cannot read encrypted messages, but it vouches for nothing it has not
checked: a device's own signature on its device keys must verify (keys without one
are taken, as Synapse takes them: clients check signatures themselves), signed
one-time and fallback keys must be signed by that device, and a device's identity keys
can never be swapped once published (that would let a server or thief impersonate it).
One-time keys are handed out oldest first, so that a client's newest keys (whose
private halves it surely still holds) are the last to go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from federation.identifiers import server_name_of
from federation.signing import verify_ed25519_signed
from federation.types import JsonDict
from homeserver.services.core.errors import ServiceError, bad_json, invalid_param
from homeserver.services.core.stored_json import ensure_storable
from homeserver.services.e2ee.cross_signing import (
    CrossSigningService,
    merge_signatures,
    same_signed_content,
)
from homeserver.services.e2ee.device_lists import DeviceLists
from homeserver.services.remote.keys import RemoteKeys, timeout_seconds
from homeserver.services.sync.tokens import InvalidToken, SyncToken
from homeserver.storage.core.pool import Connection, Database
from homeserver.storage.e2ee import keys as e2e_keys

MAX_KEY_ID_LENGTH = 255


def _self_signature(obj: JsonDict, user_id: str, device_id: str) -> object:
    signatures = obj.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, dict) else None
    return by_user.get(f"ed25519:{device_id}") if isinstance(by_user, dict) else None


def _check_device_keys(obj: object, user_id: str, device_id: str) -> JsonDict:
    """The uploaded DeviceKeys, checked: this device's, well-formed, self-signed."""
    if not isinstance(obj, dict):
        raise invalid_param("device_keys must be an object")
    if obj.get("user_id") != user_id or obj.get("device_id") != device_id:
        raise invalid_param("device_keys must be for the device making the request")
    algorithms = obj.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise invalid_param("device_keys.algorithms must be a list of strings")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or not all(isinstance(k, str) for k in keys.values()):
        raise invalid_param("device_keys.keys must map key ids to keys")
    ed25519 = keys.get(f"ed25519:{device_id}")
    if not isinstance(ed25519, str):
        raise invalid_param(f"device_keys.keys must contain ed25519:{device_id}")
    if _self_signature(obj, user_id, device_id) is None:
        return obj
    if not verify_ed25519_signed(obj, user_id, f"ed25519:{device_id}", ed25519):
        raise ServiceError(400, "M_INVALID_SIGNATURE", "device_keys are not signed by the device")
    return obj


def _check_keys(
    keys: object, what: str, user_id: str, device_id: str, ed25519: str | None
) -> list[tuple[str, str, str]]:
    """Uploaded one-time or fallback keys as (algorithm, key id, key JSON); a signed key
    must verify against the device's ed25519 key."""
    if not isinstance(keys, dict):
        raise invalid_param(f"{what} must be an object")
    out: list[tuple[str, str, str]] = []
    for name, key in keys.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id or len(name) > MAX_KEY_ID_LENGTH:
            raise invalid_param(f"{what}: {name!r} is not <algorithm>:<key id>")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise invalid_param(f"{what}: {name} has no key")
            if ed25519 is None:
                raise invalid_param(f"{what}: upload device_keys before signed keys")
            if not verify_ed25519_signed(key, user_id, f"ed25519:{device_id}", ed25519):
                raise ServiceError(
                    400, "M_INVALID_SIGNATURE", f"{what}: {name} is not signed by the device"
                )
        elif not isinstance(key, str):
            raise invalid_param(f"{what}: {name} must be a key or a signed key object")
        out.append((algorithm, key_id, orjson.dumps(key).decode()))
    return out


class E2EEKeys:
    def __init__(
        self,
        db: Database,
        device_lists: DeviceLists,
        cross_signing: CrossSigningService,
        remote: RemoteKeys,
        server_name: str,
    ) -> None:
        self.db = db
        self.device_lists = device_lists
        self.cross_signing = cross_signing
        self.remote = remote
        self.server_name = server_name

    # --- what /sync reports -------------------------------------------------------

    async def device_list_changes(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> tuple[list[str], list[str]]:
        """(changed, left) between two 'device_lists' stream positions, for /sync."""
        async with self.db.pool.connection() as conn:
            return await self.device_lists.changes(conn, user_id, from_pos, to_pos)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm; signed_curve25519 is always present
        because clients decide from it whether to upload more."""
        async with self.db.pool.connection() as conn:
            counts = await e2e_keys.one_time_key_counts(conn, user_id, device_id)
        return {"signed_curve25519": 0, **counts}

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        async with self.db.pool.connection() as conn:
            return await e2e_keys.unused_fallback_key_types(conn, user_id, device_id)

    # --- the /keys endpoints ------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> JsonDict:
        """POST /keys/upload."""
        ensure_storable(body, "The request")
        async with self.db.pool.connection() as conn:
            stored_json = await e2e_keys.get_device_keys_json(conn, user_id, device_id)
        stored = orjson.loads(stored_json) if stored_json is not None else None
        new_device_keys: JsonDict | None = None
        if body.get("device_keys") is not None:
            uploaded = _check_device_keys(body["device_keys"], user_id, device_id)
            if stored is None:
                new_device_keys = uploaded
            elif not same_signed_content(stored, uploaded):
                raise invalid_param("This device's keys are already published and cannot change")
        device_keys = new_device_keys or stored
        ed25519 = device_keys["keys"][f"ed25519:{device_id}"] if device_keys else None
        one_time: list[tuple[str, str, str]] = []
        if body.get("one_time_keys") is not None:
            one_time = _check_keys(
                body["one_time_keys"], "one_time_keys", user_id, device_id, ed25519
            )
        fallback: list[tuple[str, str, str]] = []
        fallback_body = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        if fallback_body is not None:
            fallback = _check_keys(fallback_body, "fallback_keys", user_id, device_id, ed25519)
            if len({algorithm for algorithm, _, _ in fallback}) != len(fallback):
                raise invalid_param("fallback_keys: one key per algorithm")

        if new_device_keys is not None:
            async with self.device_lists.transaction([user_id]) as conn:
                published = await e2e_keys.insert_device_keys(
                    conn, user_id, device_id, orjson.dumps(new_device_keys).decode()
                )
                if published is None or not same_signed_content(
                    orjson.loads(published), new_device_keys
                ):
                    # A concurrent upload published other keys first.
                    raise invalid_param(
                        "This device's keys are already published and cannot change"
                    )
        async with self.db.pool.connection() as conn:
            if one_time:
                async with conn.transaction():
                    await self._add_one_time_keys(conn, user_id, device_id, one_time)
            for algorithm, key_id, key_json in fallback:
                await e2e_keys.set_fallback_key(
                    conn, user_id, device_id, algorithm, key_id, key_json
                )
            counts = await e2e_keys.one_time_key_counts(conn, user_id, device_id)
        return {"one_time_key_counts": {"signed_curve25519": 0, **counts}}

    async def _add_one_time_keys(
        self, conn: Connection, user_id: str, device_id: str, keys: list[tuple[str, str, str]]
    ) -> None:
        existing = await e2e_keys.existing_one_time_keys(
            conn, user_id, device_id, [(a, k) for a, k, _ in keys]
        )
        for algorithm, key_id, key_json in keys:
            old = existing.get((algorithm, key_id))
            if old is not None and orjson.loads(old) != orjson.loads(key_json):
                raise invalid_param(f"One-time key {algorithm}:{key_id} already exists and differs")
        await e2e_keys.add_one_time_keys(conn, user_id, device_id, keys)

    async def query(self, viewer: str, body: Mapping[str, Any]) -> JsonDict:
        """POST /keys/query: local users' device keys and cross-signing keys, and remote
        users' from their servers (a server that fails is listed in `failures`)."""
        ensure_storable(body, "The request")
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object")  # as Synapse answers
        local: dict[str, list[str]] = {}
        remote: dict[str, list[str]] = {}
        failures: dict[str, JsonDict] = {}
        for user_id, device_ids in wanted.items():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_json(f"device_keys.{user_id} must be a list of device ids")
            server = server_name_of(user_id, "@")
            if server is None:
                raise invalid_param(f"{user_id} is not a user id")
            if server == self.server_name:
                local[user_id] = device_ids
            else:
                remote[user_id] = device_ids
        result: JsonDict = {"device_keys": {user_id: {} for user_id in local}}
        async with self.db.pool.connection() as conn:
            cross, signatures = await self.cross_signing.keys_for_query(conn, viewer, list(local))
            rows = await self._device_rows(conn, local)
        for row in rows:
            keys = merge_signatures(
                orjson.loads(row.key_json), row.device_id, row.user_id, signatures
            )
            unsigned = dict(keys.get("unsigned") or {})
            if row.display_name is not None:
                unsigned["device_display_name"] = row.display_name
            keys["unsigned"] = unsigned
            result["device_keys"][row.user_id][row.device_id] = keys
        result.update(cross)
        if remote:
            found, remote_failures = await self.remote.query(remote, timeout_seconds(body))
            for field, by_user in found.items():
                result.setdefault(field, {}).update(by_user)
            failures.update(remote_failures)
        result["failures"] = failures
        return result

    async def _device_rows(
        self, conn: Connection, wanted: dict[str, list[str]]
    ) -> list[e2e_keys.DeviceKeysRow]:
        every = [user_id for user_id, devices in wanted.items() if not devices]
        rows = await e2e_keys.query_device_keys(conn, every, None) if every else []
        for user_id, device_ids in wanted.items():
            if device_ids:
                rows += await e2e_keys.query_device_keys(conn, [user_id], device_ids)
        return rows

    async def claim(self, body: Mapping[str, Any]) -> JsonDict:
        """POST /keys/claim: one key per requested device, a one-time key while any is
        left, else the fallback key (which stays, marked used)."""
        ensure_storable(body, "The request")
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise bad_json("one_time_keys must be an object")
        requests: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, str]] = {}
        failures: dict[str, JsonDict] = {}
        for user_id, by_device in wanted.items():
            if not isinstance(by_device, dict) or not all(
                isinstance(a, str) for a in by_device.values()
            ):
                raise bad_json(f"one_time_keys.{user_id} must map device ids to algorithms")
            server = server_name_of(user_id, "@")
            if server is None:
                raise invalid_param(f"{user_id} is not a user id")
            if server != self.server_name:
                remote[user_id] = by_device
                continue
            requests += [(user_id, device_id, alg) for device_id, alg in by_device.items()]
        claimed: dict[str, dict[str, JsonDict]] = {}
        async with self.db.pool.connection() as conn:
            for user_id, device_id, algorithm in requests:
                found = await e2e_keys.claim_one_time_key(conn, user_id, device_id, algorithm)
                if found is None:
                    found = await e2e_keys.claim_fallback_key(conn, user_id, device_id, algorithm)
                if found is not None:
                    key_id, key_json = found
                    claimed.setdefault(user_id, {})[device_id] = {
                        f"{algorithm}:{key_id}": orjson.loads(key_json)
                    }
        if remote:
            remote_claimed, remote_failures = await self.remote.claim(remote, timeout_seconds(body))
            claimed.update(remote_claimed)
            failures.update(remote_failures)
        return {"one_time_keys": claimed, "failures": failures}

    async def changes(self, user_id: str, from_token: str, to_token: str) -> JsonDict:
        """GET /keys/changes between two sync tokens."""
        try:
            from_pos = SyncToken.parse(from_token).device_lists
            to_pos = SyncToken.parse(to_token).device_lists
        except InvalidToken:
            raise invalid_param("from and to must be sync tokens") from None
        changed, left = await self.device_list_changes(user_id, from_pos, to_pos)
        return {"changed": changed, "left": left}
