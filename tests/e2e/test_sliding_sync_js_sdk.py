"""matrix-js-sdk's SlidingSync (the client of Element Web's sliding sync, MSC4186)
against our server: the room list with names and encryption, timelines, a message
received live, and to-device messages through the to_device extension."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

SDK_VERSION = "43.0.0"
SDK_DIR = Path.home() / ".cache" / "homeserver-npm" / f"matrix-js-sdk-{SDK_VERSION}"
SCRIPT = Path(__file__).parent / "sliding_sync" / "client.mjs"
ENCRYPTION = {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


def matrix_js_sdk() -> Path:
    """The SDK's entry file, installed from the npm registry into a cache when missing."""
    entry = SDK_DIR / "node_modules" / "matrix-js-sdk" / "lib" / "index.js"
    if not entry.exists():
        assert shutil.which("npm"), "node and npm are needed for the matrix-js-sdk test"
        SDK_DIR.mkdir(parents=True, exist_ok=True)
        (SDK_DIR / "package.json").write_text(json.dumps({"name": "hs-js-sdk", "private": True}))
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"matrix-js-sdk@{SDK_VERSION}"],
            cwd=SDK_DIR,
            check=True,
            timeout=600,
        )
    return entry


class Account:
    def __init__(self, http: aiohttp.ClientSession, base: str, login: dict[str, Any]) -> None:
        self.http = http
        self.base = f"{base}/_matrix/client/v3"
        self.user_id: str = login["user_id"]
        self.device_id: str = login["device_id"]
        self.token: str = login["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @classmethod
    async def register(cls, http: aiohttp.ClientSession, base: str, name: str) -> Account:
        url = f"{base}/_matrix/client/v3/register"
        body: dict[str, Any] = {"username": name, "password": f"{name} pw"}
        async with http.post(url, json=body) as resp:
            body["auth"] = {"type": "m.login.dummy", "session": (await resp.json())["session"]}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return cls(http, base, await resp.json())

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def send(self, room_id: str, text: str, txn: str) -> None:
        content = {"msgtype": "m.text", "body": text}
        await self.call("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}", content)


async def next_line(node: asyncio.subprocess.Process, kind: str, output: list[str]) -> Any:
    """The next line of `kind` the client prints (errors fail the test)."""
    assert node.stdout is not None
    while True:
        raw = await asyncio.wait_for(node.stdout.readline(), 30)
        assert raw, "the client ended:\n" + "\n".join(output)
        line = raw.decode(errors="replace").strip()
        output.append(line)
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        assert data["kind"] != "error", data
        if data["kind"] == kind:
            return data


async def test_js_sdk_sliding_sync_lists_timelines_live_and_to_device(
    running_homeserver: str,
) -> None:
    entry = matrix_js_sdk()
    async with aiohttp.ClientSession() as http:
        alice = await Account.register(http, running_homeserver, "alice")
        bob = await Account.register(http, running_homeserver, "bob")
        plain = (
            await alice.call("POST", "/createRoom", {"name": "Plain", "preset": "public_chat"})
        )["room_id"]
        secret = (
            await alice.call(
                "POST",
                "/createRoom",
                {"name": "Secret", "preset": "public_chat", "initial_state": [ENCRYPTION]},
            )
        )["room_id"]
        await bob.call("POST", f"/join/{quote(plain)}", {})
        await bob.call("POST", f"/join/{quote(secret)}", {})
        await bob.send(plain, "hello from bob", "t1")
        node = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(entry),
            running_homeserver,
            alice.user_id,
            alice.device_id,
            alice.token,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output: list[str] = []
        try:
            ready = await next_line(node, "ready", output)
            assert ready["count"] == 2
            rooms = {room["id"]: room for room in ready["rooms"]}
            assert rooms[plain]["name"] == "Plain" and rooms[secret]["name"] == "Secret"
            assert rooms[secret]["encrypted"] is True and rooms[plain]["encrypted"] is False
            assert "hello from bob" in rooms[plain]["messages"]

            await bob.send(secret, "live in the secret room", "t2")
            message = await next_line(node, "message", output)
            assert message == {
                "kind": "message",
                "room": secret,
                "body": "live in the secret room",
            }

            # Key-sharing traffic of an encrypted room travels as to-device messages.
            content = {"room_id": secret, "algorithm": "m.megolm.v1.aes-sha2", "action": "request"}
            await bob.call(
                "PUT",
                "/sendToDevice/m.room_key_request/k1",
                {"messages": {alice.user_id: {alice.device_id: content}}},
            )
            to_device = await next_line(node, "to_device", output)
            assert to_device["type"] == "m.room_key_request"
            assert to_device["sender"] == bob.user_id
            assert to_device["content"]["room_id"] == secret
        finally:
            if node.returncode is None:
                node.kill()
            await node.wait()
