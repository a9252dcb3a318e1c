"""Requests the HTTP layer cannot parse, written byte by byte on a raw socket: each is
answered with the Matrix error format (`{"errcode", "error"}` as JSON) and the status
HTTP gives it, and logged in one line below ERROR, never as a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

LONG = "a" * 10_000


async def exchange(client: TestClient[Any, Any], raw: bytes) -> tuple[int, str, Any]:
    """Send `raw` on a new connection; (status, content type, JSON body) of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    return status, headers.get("content-type", ""), json.loads(body)


CASES = [
    ("bad request line", b"GARBAGE\r\n\r\n", 400, "M_UNRECOGNIZED"),
    ("invalid method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "M_UNRECOGNIZED"),
    ("bad version", b"GET / HTTP/9\r\nHost: x\r\n\r\n", 400, "M_UNKNOWN"),
    ("invalid header", b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400, "M_UNKNOWN"),
    (
        "request target too long",
        f"GET /_matrix/client/versions?x={LONG} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        414,
        "M_TOO_LARGE",
    ),
    (
        "header too long",
        f"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Long: {LONG}\r\n\r\n".encode(),
        431,
        "M_TOO_LARGE",
    ),
    (
        "bad chunked encoding",
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ZZ\r\n{}\r\n0\r\n\r\n",
        400,
        "M_UNKNOWN",
    ),
]


@pytest.mark.parametrize(
    ("raw", "status", "errcode"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_unparsable_requests_get_matrix_errors(
    open_client: TestClient[Any, Any],
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    status: int,
    errcode: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await exchange(open_client, raw)
    assert answer[0] == status, answer
    assert answer[1].startswith("application/json"), answer
    assert answer[2]["errcode"] == errcode and answer[2]["error"], answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # The server still serves well-formed requests on a new connection.
    resp = await open_client.get("/_matrix/client/versions")
    assert resp.status == 200
