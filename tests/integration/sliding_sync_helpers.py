"""A client of simplified sliding sync (MSC4186) for the integration tests."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import make_user
from tests.integration.test_sync import Client
from tests.integration.test_sync import User as SyncUser

SS_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
# What Element X asks of the rooms of its main list.
ELEMENT_X_STATE = [
    ["m.room.avatar", ""],
    ["m.room.encryption", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
    ["m.room.canonical_alias", ""],
    ["m.room.name", ""],
    ["m.room.join_rules", ""],
    ["m.room.power_levels", ""],
]


class User(SyncUser):
    """A `/sync` test user (calls, rooms, messages, state) that also slides."""

    def __init__(self, client: Client, user_id: str, token: str) -> None:
        super().__init__(client, user_id, token)
        self.pos: str | None = None

    async def ss(
        self,
        body: dict[str, Any],
        *,
        pos: str | None = None,
        timeout_ms: int = 0,
        status: int = 200,
    ) -> Any:
        """One sliding sync request; `pos` defaults to the last one answered."""
        params = {"timeout": str(timeout_ms)}
        if pos is not None:
            params["pos"] = pos
        resp = await self.client.post(SS_PATH, json=body, params=params, headers=self.headers)
        assert resp.status == status, await resp.text()
        answer = await resp.json()
        if status == 200:
            self.pos = answer["pos"]
        return answer

    async def next(self, body: dict[str, Any], timeout_ms: int = 0) -> Any:
        return await self.ss(body, pos=self.pos, timeout_ms=timeout_ms)

    async def device_id(self) -> str:
        return str((await self.call("GET", "/account/whoami"))["device_id"])


async def new_user(client: Client, name: str) -> User:
    user_id, token = await make_user(client, name)
    return User(client, user_id, token)


def one_list(
    end: int = 19, limit: int = 1, state: list[list[str]] | None = None, **filters: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ranges": [[0, end]],
        "timeline_limit": limit,
        "required_state": state if state is not None else ELEMENT_X_STATE,
    }
    if filters:
        entry["filters"] = filters
    return {"lists": {"all": entry}}


def window(answer: Any, name: str = "all") -> list[str]:
    return list(answer["lists"][name]["ops"][0]["room_ids"])


def bodies(room: Any) -> list[str]:
    return [
        e["content"].get("body") for e in room.get("timeline", []) if e["type"] == "m.room.message"
    ]
