"""Many simulated Matrix servers on loopback, for the busy-room benchmarks.

One aiohttp application listens on many ports over TLS (one self-signed certificate);
the port a request came in on says which server it is for. Each server is named
"127.0.0.1:PORT", has its own ed25519 key, and answers as a real server does where the
benchmark needs it: `/key/v2/server` (self-signed keys) and `/send` (recording when each
message body arrived; a server marked slow answers after `delay` seconds). A server can
join a room of a real server (make_join, then send_join, with signed requests and a
signed event) and send it transactions of messages of its own user.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import yarl
from aiohttp import web

from federation.builder import build_event
from federation.hashing import compute_event_id
from federation.keys import encode_verify_key, generate_signing_key
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from federation.signing import sign_json
from federation.xmatrix import sign_request

DAY_MS = 86_400_000
SUPPORTED_VERSIONS = list(KNOWN_ROOM_VERSIONS)


class FakeServer:
    """One simulated server: its name, key, the message bodies it received and when."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.name = f"127.0.0.1:{port}"
        self.key = generate_signing_key("fake")
        self.delay = 0.0  # seconds before answering /send
        self.arrivals: dict[str, float] = {}
        self.last_pdu: dict[str, Any] | None = None  # newest received, to build on
        self.room_state: dict[tuple[str, str], str] = {}  # (type, state_key) -> event id
        self.member_event = ""
        self.next_prev = ""  # the last message this server sent, once it sent some
        self.next_depth = 0
        self.transactions = 0
        self.sent: dict[str, dict[str, Any]] = {}  # its own events by id, served back

    @property
    def user_id(self) -> str:
        return f"@fake:{self.name}"

    def key_response(self) -> dict[str, Any]:
        body = {
            "server_name": self.name,
            "valid_until_ts": int(time.time() * 1000) + DAY_MS,
            "verify_keys": {self.key.key_id: {"key": encode_verify_key(self.key.verify_key)}},
            "old_verify_keys": {},
        }
        return sign_json(body, self.name, self.key)


class FakeNetwork:
    """`count` fake servers on one event loop; `start`, then `close`."""

    def __init__(self, count: int, cert: Path, key: Path) -> None:
        # Bound now, on ports the system picked, so that no other process takes them.
        self._sockets = [_listening_socket() for _ in range(count)]
        self.servers = [FakeServer(s.getsockname()[1]) for s in self._sockets]
        self._by_port = {s.port: s for s in self.servers}
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_get("/_matrix/key/v2/server/{key_id}", self._keys)
        app.router.add_put("/_matrix/federation/v1/send/{txn}", self._send)
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", self._event)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{room}", self._missing)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for sock in self._sockets:
            await web.SockSite(self._runner, sock, ssl_context=self._tls).start()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False, limit=0),
            timeout=aiohttp.ClientTimeout(total=300),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _server(self, request: web.Request) -> FakeServer:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self._by_port[int(sockname[1])]

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response(self._server(request).key_response())

    async def _send(self, request: web.Request) -> web.Response:
        server = self._server(request)
        body = await request.json(loads=orjson.loads)
        now = time.monotonic()
        server.transactions += 1
        for pdu in body.get("pdus", []):
            text = pdu.get("content", {}).get("body")
            if isinstance(text, str):
                server.arrivals.setdefault(text, now)
            if pdu.get("type") != "m.room.member" or pdu.get("state_key") != server.user_id:
                server.last_pdu = pdu
        if server.delay:
            await asyncio.sleep(server.delay)
        return web.json_response({"pdus": {}})

    async def _event(self, request: web.Request) -> web.Response:
        server = self._server(request)
        pdu = server.sent.get(request.match_info["event_id"])
        if pdu is None:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        body = {"origin": server.name, "origin_server_ts": int(time.time() * 1000)}
        return web.json_response({**body, "pdus": [pdu]})

    async def _missing(self, request: web.Request) -> web.Response:
        """Its own events before `latest_events`, newest first, back to `earliest_events`:
        a server that dropped part of a stream (Synapse prunes a room's queue of received
        events past 100) asks the origin for them."""
        server = self._server(request)
        body = await request.json(loads=orjson.loads)
        earliest = set(body.get("earliest_events", []))
        limit = min(int(body.get("limit", 10)), 100)
        found: list[dict[str, Any]] = []
        frontier = list(body.get("latest_events", []))
        seen = set(frontier) | earliest
        while frontier and len(found) < limit:
            pdu = server.sent.get(frontier.pop(0))
            for prev in [] if pdu is None else pdu["prev_events"]:
                if prev not in seen and prev in server.sent:
                    seen.add(prev)
                    found.append(server.sent[prev])
                    frontier.append(prev)
        return web.json_response({"events": sorted(found[:limit], key=lambda p: p["depth"])})

    async def _unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_UNRECOGNIZED"}, status=404)

    # ---- as a client of the real server

    async def request(
        self, server: FakeServer, method: str, target: str, path: str, body: Any = None
    ) -> Any:
        """A signed federation request from `server` to the server named `target`
        ("localhost:PORT" or "127.0.0.1:PORT", reached on 127.0.0.1)."""
        assert self.session is not None
        auth = sign_request(method, path, server.name, target, server.key, body)
        host = target.replace("localhost", "127.0.0.1", 1)
        url = yarl.URL(f"https://{host}{path}", encoded=True)
        headers = {"Authorization": auth}
        data = None if body is None else orjson.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            answer = await resp.json(loads=orjson.loads, content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"{method} {path} from {server.name}: {resp.status} {answer}")
            return answer

    async def join(self, server: FakeServer, target: str, room_id: str) -> None:
        """`server`'s user joins `room_id` through `target`."""
        room = quote(room_id, safe="")
        user = quote(server.user_id, safe="")
        versions = "&".join(f"ver={v}" for v in SUPPORTED_VERSIONS)
        made = await self.request(
            server, "GET", target, f"/_matrix/federation/v1/make_join/{room}/{user}?{versions}"
        )
        version = get_room_version(made.get("room_version", "1"))
        template = made["event"]
        event = build_event(
            version,
            server.key,
            event_type="m.room.member",
            sender=server.user_id,
            state_key=server.user_id,
            content=template["content"],
            prev_events=template["prev_events"],
            auth_events=template["auth_events"],
            depth=template["depth"],
            origin_server_ts=int(time.time() * 1000),
            room_id=room_id,
        )
        path = f"/_matrix/federation/v2/send_join/{room}/{quote(event.event_id, safe='')}"
        joined = await self.request(server, "PUT", target, path, event.pdu)
        for pdu in joined.get("state", []):
            if "state_key" in pdu:
                server.room_state[(pdu["type"], pdu["state_key"])] = _event_id(pdu, version)
        server.member_event = event.event_id
        server.last_pdu = dict(event.pdu, event_id=event.event_id)

    def messages(self, server: FakeServer, room_id: str, version_id: str, count: int) -> list[Any]:
        """`count` messages of `server`'s user, each following the one before."""
        version = get_room_version(version_id)
        assert server.last_pdu is not None
        # The first follows this server's own join (which the real server surely has),
        # above the newest event it saw.
        prev = server.next_prev or server.member_event
        depth = max(int(server.last_pdu["depth"]), server.next_depth)
        auth = [
            server.room_state[("m.room.create", "")],
            server.room_state[("m.room.power_levels", "")],
            server.member_event,
        ]
        if version.room_id_from_create_event:
            auth = auth[1:]
        events = []
        for i in range(count):
            depth += 1
            event = build_event(
                version,
                server.key,
                event_type="m.room.message",
                sender=server.user_id,
                content={"msgtype": "m.text", "body": f"inbound {time.monotonic_ns()} {i}"},
                prev_events=[prev],
                auth_events=auth,
                depth=depth,
                origin_server_ts=int(time.time() * 1000),
                room_id=room_id,
            )
            events.append(event)
            server.sent[event.event_id] = event.pdu
            prev = event.event_id
        server.next_prev, server.next_depth = prev, depth
        return events


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _event_id(pdu: dict[str, Any], version: RoomVersion) -> str:
    return str(pdu.get("event_id") or compute_event_id(pdu, version))
