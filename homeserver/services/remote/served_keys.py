"""Our users' end-to-end encryption keys for other servers: `POST /user/keys/query`
and `POST /user/keys/claim` (server-server "End-to-End Encryption"), answered from the
local key service for our own users only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.identifiers import server_name_of
from federation.types import JsonDict
from homeserver.services.e2ee.keys import E2EEKeys
from homeserver.services.remote.device_lists import valid_id


class ServedKeys:
    def __init__(self, keys: E2EEKeys, server_name: str) -> None:
        self.keys = keys
        self.server_name = server_name

    def _local_only(self, wanted: Any) -> dict[str, Any]:
        if not isinstance(wanted, dict):
            return {}
        return {
            user_id: value
            for user_id, value in wanted.items()
            if server_name_of(user_id, "@") == self.server_name
        }

    async def serve_query(self, body: Mapping[str, Any]) -> JsonDict:
        """POST /_matrix/federation/v1/user/keys/query: our users' keys only; no display
        names, no user-signing keys, no signatures other users made."""
        wanted = {
            user_id: [d for d in devices if valid_id(d)]
            for user_id, devices in self._local_only(body.get("device_keys")).items()
            if isinstance(devices, list)
        }
        answer = await self.keys.query("", {"device_keys": wanted})
        for devices in answer["device_keys"].values():
            for keys in devices.values():
                unsigned = keys.get("unsigned")
                if isinstance(unsigned, dict):
                    unsigned.pop("device_display_name", None)
                    if not unsigned:
                        del keys["unsigned"]
        return {
            "device_keys": answer["device_keys"],
            "master_keys": answer.get("master_keys", {}),
            "self_signing_keys": answer.get("self_signing_keys", {}),
        }

    async def serve_claim(self, body: Mapping[str, Any]) -> JsonDict:
        """POST /_matrix/federation/v1/user/keys/claim: our users' keys only."""
        wanted = {
            user_id: {d: a for d, a in by_device.items() if valid_id(d) and valid_id(a)}
            for user_id, by_device in self._local_only(body.get("one_time_keys")).items()
            if isinstance(by_device, dict)
        }
        answer = await self.keys.claim({"one_time_keys": wanted})
        return {"one_time_keys": answer["one_time_keys"]}
