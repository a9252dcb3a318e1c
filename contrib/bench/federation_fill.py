"""A big room built outside Synapse, then held by it through federation (for
`federation_join.py`, `--join-fill ours`).

Filling a room inside Synapse through its own APIs runs at a few events a second on a
loaded machine (`contrib/synapse_rooms.py`), far too slow for the thousands a big room
needs. Our server takes ten to a hundred a second, so a server of ours (the filler) creates the
public room, registers and joins the members locally and sends the extra state; then a
user of the resident Synapse joins over federation, by partial state, and Synapse fetches
the full state from the filler in the background. Once Synapse's member list is whole,
it holds the room like any other and answers make_join/send_join for it. Measured on
2 shared cores (load average 1 to 3): 15,000 state events in 13 minutes (29 a second
at first, 10 around 5,000, 50 by the end), then 5,000 members in 4.5 minutes; the
resident's partial-state join took 26 s and its full state 47 s.

The filler's Prometheus counters of federation requests it answered tell, around each
measured join, whether the joining server asked the filler for anything (the join itself
must go through the resident Synapse).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from contrib.bench.harness import Api, bounded
from contrib.synapse_rooms import register_admin

CONCURRENCY = 16
PROGRESS_S = 15.0
PROGRESS_EVERY = 1000
WHOLE_WITHIN_S = 7200.0
COUNTER = "homeserver_http_requests_total{"


async def _member(session: aiohttp.ClientSession, base: str, room_id: str, name: str) -> None:
    """Register `name` without a password (no hashing) and join it to the room."""
    api = Api(session, base)
    body: dict[str, Any] = {"username": name}
    async with session.post(api.base + "/register", json=body) as resp:
        body["auth"] = {"type": "m.login.dummy", "session": (await resp.json())["session"]}
    data = await api.call("POST", "/register", body)
    user = Api(session, base, data["access_token"])
    await user.call("POST", f"/join/{quote(room_id)}", {})


async def _run(jobs: list[Callable[[], Awaitable[Any]]], what: str) -> None:
    """Run `jobs` CONCURRENCY at a time, printing progress every PROGRESS_EVERY."""
    started = time.monotonic()
    done = 0

    async def counted(job: Callable[[], Awaitable[Any]]) -> None:
        nonlocal done
        await job()
        done += 1
        if done % PROGRESS_EVERY == 0 or done == len(jobs):
            print(f"filler: {done} {what} in {time.monotonic() - started:.0f} s", flush=True)

    await bounded([functools.partial(counted, job) for job in jobs], CONCURRENCY)


async def fill_ours(
    session: aiohttp.ClientSession, base: str, server_name: str, members: int, extra_state: int
) -> tuple[str, set[str], int]:
    """A public room on our server at `base` with `members` local members and
    `extra_state` more state events; (room id, its members, its state event count)."""
    owner = await Api(session, base).register("bigroom")
    room_id = (await owner.call("POST", "/createRoom", {"preset": "public_chat", "name": "Big"}))[
        "room_id"
    ]
    # Before the members: each state event costs push rule work for every local member.
    room = quote(room_id)
    sends: list[Callable[[], Awaitable[Any]]] = [
        lambda n=n: owner.call("PUT", f"/rooms/{room}/state/org.example.bench/key{n}", {"n": n})
        for n in range(extra_state)
    ]
    await _run(sends, "state events")
    names = [f"member{n}" for n in range(members)]
    joins: list[Callable[[], Awaitable[None]]] = [
        lambda name=name: _member(session, base, room_id, name) for name in names
    ]
    await _run(joins, "members")
    state = await owner.call("GET", f"/rooms/{room}/state")
    users = {f"@{name}:{server_name}" for name in names}
    return room_id, {owner.user_id, *users}, len(state)


async def synapse_holds(
    session: aiohttp.ClientSession, base: str, room_id: str, filler_name: str, state_events: int
) -> None:
    """A user of the Synapse at `base` joins the room through the filler; returns once
    Synapse holds its full state (every member and state event), printing progress."""
    token = await register_admin(session, base, "resident")
    user = Api(session, base, token)
    started = time.monotonic()
    await user.call("POST", f"/join/{quote(room_id)}", {}, params={"server_name": filler_name})
    print(f"resident: joined by partial state in {time.monotonic() - started:.1f} s", flush=True)
    details_url = f"{base}/_synapse/admin/v1/rooms/{quote(room_id)}"
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() - started < WHOLE_WITHIN_S:
        async with session.get(details_url, headers=headers) as resp:
            details = await resp.json()
        # Synapse fills in its room statistics only once the state is whole (None before).
        held = details.get("state_events") or 0
        print(
            f"resident: {time.monotonic() - started:.0f} s, {details.get('joined_members')}"
            f" joined, {held} of {state_events + 1} state events",
            flush=True,
        )
        if await _members_whole(session, user, room_id):
            print(f"resident: full state in {time.monotonic() - started:.0f} s", flush=True)
            return
        await asyncio.sleep(PROGRESS_S)
    raise RuntimeError(f"the resident lacked the room's full state after {WHOLE_WITHIN_S} s")


async def _members_whole(session: aiohttp.ClientSession, user: Api, room_id: str) -> bool:
    """Whether Synapse answers /members within a minute (it holds it back while the
    state is partial, then lists thousands at once)."""
    try:
        async with asyncio.timeout(60):
            await user.call("GET", f"/rooms/{quote(room_id)}/members")
    except TimeoutError:
        return False
    return True


async def federation_requests(session: aiohttp.ClientSession, metrics_url: str) -> dict[str, int]:
    """Federation requests our server at `metrics_url` answered so far, by route."""
    async with session.get(metrics_url) as resp:
        text = await resp.text()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(COUNTER) or "/_matrix/federation" not in line:
            continue
        labels, _, value = line.rpartition(" ")
        route = labels.split('route="', 1)[1].split('"', 1)[0].removeprefix("/_matrix/federation")
        counts[route] = counts.get(route, 0) + int(float(value))
    return counts


def asked(before: dict[str, int], after: dict[str, int]) -> str:
    """The federation requests answered between two snapshots, as "route xN, ..."."""
    grown = {route: n - before.get(route, 0) for route, n in after.items()}
    return ", ".join(f"{route} x{n}" for route, n in sorted(grown.items()) if n) or "none"
