"""Big rooms on a Synapse of the harness, made fast through its admin API: an admin by
shared-secret registration, then accounts created without a password (no bcrypt) and
joined by the admin's join API. Measured on 2 busy cores (load average 17): about 8
members a second, so 2,000 members take some four minutes. Extra state events
(`fill_state`) go in at about 16 a second into a room of 100 members, slowing to about
4.4 a second by 2,800 of them in a room of 2,000 (load average 7 to 15): 15,000 take
over an hour. Into a room of one member, four at a time, they go in at 6 to 10 a second
at first, slowing to 4 by 1,000 (load 13 to 20) or to 1.7 by 1,400 (load 25 to 30); one
at a time is no faster (2.5 a second, 1.7 by 700, load 27), and sixteen at a time is
worse (9 a second, under 1 by 800, load 36: the DAG forks and Synapse resolves state at
every merge). A createRoom `initial_state` of 3,000 had not finished after 200 s (load
27 to 34): Synapse batches them, but then reads each one's state back through an
ever longer chain of state-group deltas. Members joining a room that already holds 2,000
extra state events came in at 3 a second, slowing to 1.1 by 2,500 (load 14 to 27);
Synapse takes one join at a time, so its DAG stays a line whatever the concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import aiohttp

ADMIN_V1 = "/_synapse/admin/v1"
RETRIES = 3
SHARED_SECRET = "interop-secret"  # the harness's Synapse is configured with it


async def register_admin(http: aiohttp.ClientSession, base: str, name: str) -> str:
    """An admin's access token, registered with the shared secret."""
    async with http.get(f"{base}{ADMIN_V1}/register") as resp:
        nonce = (await resp.json())["nonce"]
    password = f"{name} password"
    message = "\x00".join([nonce, name, password, "admin"]).encode()
    mac = hmac.new(SHARED_SECRET.encode(), message, hashlib.sha1).hexdigest()
    body = {"nonce": nonce, "username": name, "password": password, "admin": True, "mac": mac}
    async with http.post(f"{base}{ADMIN_V1}/register", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def populate(
    http: aiohttp.ClientSession,
    base: str,
    admin_token: str,
    room_id: str,
    user_ids: list[str],
    concurrency: int = 8,
) -> None:
    """Create each of `user_ids` (local to the Synapse) and join them to `room_id`."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    slots = asyncio.Semaphore(concurrency)

    async def call(method: str, path: str, body: Any) -> None:
        for attempt in range(RETRIES + 1):
            async with http.request(method, f"{base}{path}", json=body, headers=headers) as resp:
                if resp.status in (200, 201):
                    return
                # Synapse on PostgreSQL sometimes fails concurrent account creations
                # with a 500 (a lost race inside it); the same call again succeeds.
                if resp.status < 500 or attempt == RETRIES:
                    raise AssertionError(f"{path}: {resp.status} {await resp.text()}")
            await asyncio.sleep(0.5)

    async def one(user_id: str) -> None:
        async with slots:
            await call("PUT", f"/_synapse/admin/v2/users/{quote(user_id)}", {})
            await call("POST", f"{ADMIN_V1}/join/{quote(room_id)}", {"user_id": user_id})

    await asyncio.gather(*(one(u) for u in user_ids))


async def fill_state(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    room_id: str,
    count: int,
    concurrency: int = 8,
) -> None:
    """Send `count` custom state events with distinct state keys into `room_id`, so its
    state is big beyond its members (a 429 waits as Synapse asks)."""
    headers = {"Authorization": f"Bearer {token}"}
    slots = asyncio.Semaphore(concurrency)
    room = quote(room_id)

    async def one(n: int) -> None:
        path = f"/_matrix/client/v3/rooms/{room}/state/org.example.bench/key{n}"
        async with slots:
            for attempt in range(RETRIES + 1):
                async with http.put(f"{base}{path}", json={"n": n}, headers=headers) as resp:
                    if resp.status == 200:
                        return
                    text = await resp.text()
                    if resp.status == 429:
                        wait_ms = (await resp.json()).get("retry_after_ms", 500)
                        await asyncio.sleep(wait_ms / 1000)
                        continue
                    if resp.status < 500 or attempt == RETRIES:
                        raise AssertionError(f"{path}: {resp.status} {text}")
                await asyncio.sleep(0.5)
            raise AssertionError(f"{path}: still rate-limited")

    await asyncio.gather(*(one(n) for n in range(count)))
