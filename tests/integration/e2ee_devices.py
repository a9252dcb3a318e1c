"""Simulated client devices for the end-to-end encryption tests: ed25519 identities that
publish and sign keys the way a real client does (canonical JSON, unpadded base64)."""

from __future__ import annotations

from typing import Any

import nacl.signing
from aiohttp.test_utils import TestClient

from federation import unpadded_base64
from federation.signing import signing_bytes
from tests.integration.conftest import CLIENT_V3, auth_header, device_token, make_user


def sign(obj: dict[str, Any], user_id: str, key_id: str, key: nacl.signing.SigningKey) -> None:
    """Add `user_id`'s signature under `key_id` to `obj` in place."""
    signature = unpadded_base64.encode(key.sign(signing_bytes(obj)).signature)
    obj.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = signature


def public(key: nacl.signing.SigningKey) -> str:
    return unpadded_base64.encode(bytes(key.verify_key))


class Device:
    """One logged-in device of a user, with its identity key."""

    def __init__(self, client: TestClient[Any, Any], user_id: str, device_id: str, token: str):
        self.client = client
        self.user_id = user_id
        self.device_id = device_id
        self.headers = auth_header(token)
        self.key = nacl.signing.SigningKey.generate()
        self.curve25519 = public(nacl.signing.SigningKey.generate())
        self._otk = 0

    @classmethod
    async def make(cls, client: TestClient[Any, Any], localpart: str) -> Device:
        user_id, token = await make_user(client, localpart)
        return cls(client, user_id, "TESTDEVICE", token)

    async def another(self, device_id: str) -> Device:
        """A second device of the same user."""
        token = await device_token(self.client, self.user_id, device_id)
        return Device(self.client, self.user_id, device_id, token)

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.device_id}"

    def device_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": self.curve25519,
                self.key_id: public(self.key),
            },
        }
        sign(keys, self.user_id, self.key_id, self.key)
        return keys

    def one_time_keys(self, count: int, *, fallback: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _ in range(count):
            self._otk += 1
            key: dict[str, Any] = {"key": public(nacl.signing.SigningKey.generate())}
            if fallback:
                key["fallback"] = True
            sign(key, self.user_id, self.key_id, self.key)
            out[f"signed_curve25519:K{self._otk:04d}"] = key
        return out

    async def call(
        self, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, Any]:
        resp = await self.client.request(
            method, f"{CLIENT_V3}{path}", json=body, params=params, headers=self.headers
        )
        return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, result = await self.call(method, path, body, **params)
        assert status == 200, f"{method} {path}: {status} {result}"
        return result

    async def upload(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok("POST", "/keys/upload", body)
        return result

    async def publish(self, one_time: int = 0) -> dict[str, Any]:
        """Upload device keys (and `one_time` one-time keys)."""
        return await self.upload(
            device_keys=self.device_keys(), one_time_keys=self.one_time_keys(one_time)
        )
