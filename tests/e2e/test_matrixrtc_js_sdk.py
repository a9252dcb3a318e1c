"""matrix-js-sdk's MatrixRTC session (as Element Call uses it) against our server: it
joins a call without media, keeping a delayed leave alive; killed, it stops restarting
the delay and the server sends the leave, so the call membership disappears."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

SDK_VERSION = "43.0.0"
SDK_DIR = Path.home() / ".cache" / "homeserver-npm" / f"matrix-js-sdk-{SDK_VERSION}"
SCRIPT = Path(__file__).parent / "matrixrtc" / "join_call.mjs"
DELAY_MS = 4000
CALL_TYPES = ("org.matrix.msc3401.call.member", "org.matrix.msc4143.rtc.member")


def matrix_js_sdk() -> Path:
    """The SDK's entry file, installed from the npm registry into a cache when missing."""
    entry = SDK_DIR / "node_modules" / "matrix-js-sdk" / "lib" / "index.js"
    if not entry.exists():
        assert shutil.which("npm"), "node and npm are needed for the MatrixRTC test"
        SDK_DIR.mkdir(parents=True, exist_ok=True)
        (SDK_DIR / "package.json").write_text(json.dumps({"name": "hs-rtc", "private": True}))
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"matrix-js-sdk@{SDK_VERSION}"],
            cwd=SDK_DIR,
            check=True,
            timeout=600,
        )
    return entry


async def _register(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    url = f"{base}/_matrix/client/v3/register"
    body: dict[str, Any] = {"username": "caller", "password": "call pw"}
    async with http.post(url, json=body) as resp:
        body["auth"] = {"type": "m.login.dummy", "session": (await resp.json())["session"]}
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def _call_members(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], room_id: str
) -> list[dict[str, Any]]:
    """The room's call membership events that still hold a membership."""
    url = f"{base}/_matrix/client/v3/rooms/{quote(room_id)}/state"
    async with http.get(url, headers=headers) as resp:
        state = await resp.json()
    return [e for e in state if e["type"] in CALL_TYPES and e["content"]]


async def test_membership_disappears_when_the_client_is_killed(running_homeserver: str) -> None:
    entry = matrix_js_sdk()
    base = running_homeserver
    async with aiohttp.ClientSession() as http:
        account = await _register(http, base)
        headers = {"Authorization": f"Bearer {account['access_token']}"}
        async with http.post(
            f"{base}/_matrix/client/v3/createRoom", json={}, headers=headers
        ) as resp:
            room_id = (await resp.json())["room_id"]
        node = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(entry),
            base,
            account["user_id"],
            account["device_id"],
            account["access_token"],
            room_id,
            str(DELAY_MS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output: list[str] = []
        try:
            assert node.stdout is not None
            async with asyncio.timeout(60):
                while True:
                    line = (await node.stdout.readline()).decode(errors="replace")
                    assert line, "the client exited:\n" + "".join(output[-40:])
                    output.append(line)
                    if line.strip() == "JOINED":
                        break
            drain = asyncio.create_task(_drain(node.stdout, output))
            joined = time.monotonic()
            while not (members := await _call_members(http, base, headers, room_id)):
                assert time.monotonic() - joined < 30, "no membership:\n" + "".join(output[-60:])
                await asyncio.sleep(0.2)
            [member] = members
            assert member["sender"] == account["user_id"]
            async with http.get(
                f"{base}/_matrix/client/unstable/org.matrix.msc4140/delayed_events",
                headers=headers,
            ) as resp:
                [delayed] = (await resp.json())["delayed_events"]
            assert delayed["type"] == member["type"]
            assert delayed["state_key"] == member["state_key"]
            # Alive, the client restarts its delayed leave: still a member after
            # twice the delay.
            await asyncio.sleep(2 * DELAY_MS / 1000)
            assert await _call_members(http, base, headers, room_id)
        finally:
            if node.returncode is None:
                node.kill()  # as a crash or a lost connection would end it
            await node.wait()
        killed = time.monotonic()
        while await _call_members(http, base, headers, room_id):
            assert time.monotonic() - killed < DELAY_MS / 1000 + 20, "the leave was not sent"
            await asyncio.sleep(0.2)
        drain.cancel()


async def _drain(stream: asyncio.StreamReader, output: list[str]) -> None:
    """Keep reading the client's log so that it never blocks on a full pipe."""
    while line := await stream.readline():
        output.append(line.decode(errors="replace"))
