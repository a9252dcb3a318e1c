"""Three `homeserver run` processes behind nginx on one PostgreSQL database: any request
may reach any process (a process killed outright: test_kill.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.cluster.harness import Cluster
from tests.integration.test_process import cli

CLIENT = "/_matrix/client/v3"
WAKE_BUDGET_S = 5.0
RETRYABLE = {429, 502, 503, 504}


class User:
    """A client of the cluster: through the load balancer, or one process directly."""

    def __init__(self, session: aiohttp.ClientSession, user_id: str, token: str) -> None:
        self.session = session
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, base: str, name: str) -> User:
        url = f"{base}{CLIENT}/register"
        body: dict[str, Any] = {"username": name, "password": "secret pw"}
        async with session.post(url, json=body) as resp:
            body["auth"] = {"type": "m.login.dummy", "session": (await resp.json())["session"]}
        async with session.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.json()
        return cls(session, data["user_id"], data["access_token"])

    async def request(
        self, base: str, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{base}{CLIENT}{path}", json=body, headers=self.headers, params=params
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, base: str, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, data = await self.request(base, method, path, body, **params)
        assert status == 200, f"{method} {path}: {status} {data}"
        return data

    async def sync(self, base: str, since: str | None = None, timeout_ms: int = 0) -> Any:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        return await self.ok(base, "GET", "/sync", **params)


def bodies(sync: Any, room_id: str) -> list[str]:
    room = sync["rooms"]["join"].get(room_id, {})
    return [e["content"].get("body") for e in room.get("timeline", {}).get("events", [])]


async def room_of_three(cluster: Cluster, session: aiohttp.ClientSession) -> tuple[list[User], str]:
    """Three users, each registered through a different process, in one room."""
    tag = str(time.monotonic_ns())
    users = [await User.register(session, cluster.base(i), f"u{i}-{tag}") for i in range(3)]
    room = await users[0].ok(cluster.url, "POST", "/createRoom", {"preset": "public_chat"})
    for user in users[1:]:
        await user.ok(cluster.url, "POST", f"/join/{room['room_id']}", {})
    return users, room["room_id"]


async def test_users_on_different_processes_chat_and_every_long_poll_wakes(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as session:
        users, room_id = await room_of_three(cluster, session)
        # User i long-polls process i; each message is sent through each process in turn.
        since = [(await u.sync(cluster.base(i)))["next_batch"] for i, u in enumerate(users)]
        for sender in range(3):
            text = f"via process {sender}"
            polls = [
                asyncio.create_task(u.sync(cluster.base(i), since[i], timeout_ms=20_000))
                for i, u in enumerate(users)
            ]
            await asyncio.sleep(0.3)  # all three are waiting
            assert not any(p.done() for p in polls)
            txn = f"wake-{sender}"
            await users[sender].ok(
                cluster.base(sender),
                "PUT",
                f"/rooms/{room_id}/send/m.room.message/{txn}",
                {"msgtype": "m.text", "body": text},
            )
            results = await asyncio.wait_for(asyncio.gather(*polls), WAKE_BUDGET_S)
            for i, result in enumerate(results):
                assert text in bodies(result, room_id), f"process {i} missed {text!r}"
                since[i] = result["next_batch"]
        # And through the load balancer, as a client would.
        await users[1].ok(
            cluster.url,
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/lb",
            {"msgtype": "m.text", "body": "through nginx"},
        )
        page = await users[2].ok(cluster.url, "GET", f"/rooms/{room_id}/messages", dir="b")
        assert page["chunk"][0]["content"]["body"] == "through nginx"


async def test_room_creation_limit_is_shared_by_the_processes(cluster: Cluster) -> None:
    """Room creation allows a burst of 5 per user: through three processes, still 5."""
    async with aiohttp.ClientSession() as session:
        user = await User.register(session, cluster.url, f"flood-{time.monotonic_ns()}")
        statuses = await asyncio.gather(
            *(user.request(cluster.base(n % 3), "POST", "/createRoom", {}) for n in range(15))
        )
    codes = [status for status, _ in statuses]
    assert set(codes) <= {200, 429}
    # Room creation refills at 0.1/s: a sixth may have come back while these ran.
    assert 5 <= codes.count(200) <= 6, codes


async def send_until_acknowledged(user: User, base: str, room_id: str, txn: str, body: str) -> str:
    """Send, retrying with the same txnId through errors, as a client does."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"{txn} never acknowledged"
        try:
            status, data = await user.request(
                base,
                "PUT",
                f"/rooms/{room_id}/send/m.room.message/{txn}",
                {"msgtype": "m.text", "body": body},
            )
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.1)
            continue
        if status == 200:
            return str(data["event_id"])
        assert status in RETRYABLE, (status, data)
        await asyncio.sleep(0.1)


async def whole_timeline(user: User, base: str, room_id: str) -> list[Any]:
    events: list[Any] = []
    params = {"dir": "f", "limit": "500"}
    while True:
        page = await user.ok(base, "GET", f"/rooms/{room_id}/messages", **params)
        events.extend(page["chunk"])
        if "end" not in page or not page["chunk"]:
            return events
        params["from"] = page["end"]


async def _admin(cluster: Cluster, session: aiohttp.ClientSession) -> User:
    name = f"admin-{time.monotonic_ns()}"
    made = await asyncio.to_thread(
        cli,
        "register",
        name,
        "--password",
        "admin pw",
        "--admin",
        "--data-dir",
        str(cluster.data_dirs[0]),
        "--database-url",
        cluster.config["database"]["url"],
    )
    assert made.returncode == 0, made.stderr
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": name},
        "password": "admin pw",
    }
    async with session.post(f"{cluster.url}{CLIENT}/login", json=login) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    return User(session, data["user_id"], data["access_token"])


async def test_room_deletion_is_seen_and_refused_twice_through_every_process(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as session:
        users, room_id = await room_of_three(cluster, session)
        admin = await _admin(cluster, session)
        admin_api = "/_synapse/admin/v2/rooms"

        async def admin_call(i: int, method: str, path: str, body: Any = None) -> Any:
            url = f"{cluster.base(i)}{admin_api}{path}"
            async with session.request(method, url, json=body, headers=admin.headers) as resp:
                return resp.status, await resp.json()

        status, started = await admin_call(0, "DELETE", f"/{room_id}", {"purge": True})
        assert status == 200, started
        # Another process knows the room's deletion is under way (or already done: the
        # room is then gone).
        status, again = await admin_call(1, "DELETE", f"/{room_id}", {"purge": True})
        assert status in (400, 404), again
        deadline = time.monotonic() + 30
        while True:
            status, body = await admin_call(2, "GET", f"/delete_status/{started['delete_id']}")
            assert status == 200, body
            if body["status"] == "complete":
                break
            assert body["status"] in ("scheduled", "active"), body
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert sorted(body["shutdown_room"]["kicked_users"]) == sorted(u.user_id for u in users)
        status, listed = await admin_call(1, "GET", f"/{room_id}/delete_status")
        assert status == 200
        assert [r["delete_id"] for r in listed["results"]] == [started["delete_id"]]


async def test_processes_share_one_signing_key(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as session:
        keys = []
        for i in range(3):
            async with session.get(f"{cluster.base(i)}/_matrix/key/v2/server") as resp:
                keys.append(sorted((await resp.json())["verify_keys"].items()))
    assert keys[0] == keys[1] == keys[2]
    assert not any((d / "signing.key").exists() for d in cluster.data_dirs)


async def test_typing_started_on_one_process_wakes_a_long_poll_on_another(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as session:
        users, room_id = await room_of_three(cluster, session)
        since = (await users[2].sync(cluster.base(2)))["next_batch"]
        poll = asyncio.create_task(users[2].sync(cluster.base(2), since, timeout_ms=20_000))
        await asyncio.sleep(0.3)
        await users[0].ok(
            cluster.base(0),
            "PUT",
            f"/rooms/{room_id}/typing/{users[0].user_id}",
            {"typing": True, "timeout": 10_000},
        )
        result = await asyncio.wait_for(poll, WAKE_BUDGET_S)
        ephemeral = result["rooms"]["join"][room_id]["ephemeral"]["events"]
        typing = [e for e in ephemeral if e["type"] == "m.typing"]
        assert typing and typing[0]["content"]["user_ids"] == [users[0].user_id]
