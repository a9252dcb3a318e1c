"""`homeserver backup` while the server runs, then `homeserver restore` into a fresh data
directory and database: users, rooms, history, media and the signing key all come back,
on an external PostgreSQL and on the embedded one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import PostgresServer
from tests.integration.test_process import (
    START_BUDGET_FIRST,
    Server,
    clean_env,
    cli,
    free_port,
    postgres_processes,
)

MEDIA = b"\x89PNG not really, but bytes all the same"


def http(port: int, method: str, path: str, body: Any = None, token: str | None = None,
         data: bytes | None = None) -> tuple[int, Any]:  # fmt: skip
    headers = {"Content-Type": "application/json" if data is None else "image/png"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = data if data is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=payload, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in kind else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def login(port: int) -> tuple[int, Any]:
    return http(
        port,
        "POST",
        "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dora"},
         "password": "dora pw"},
    )  # fmt: skip


def server_key(port: int) -> Any:
    return http(port, "GET", "/_matrix/key/v2/server")[1]["verify_keys"]


def populate(port: int, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """An account, a room with a message, an upload; what to find again."""
    result = cli("register", "dora", "--password", "dora pw", "--data-dir", str(data_dir), env=env)
    assert result.returncode == 0, result.stderr
    status, session = login(port)
    assert status == 200, session
    token = session["access_token"]
    client = "/_matrix/client/v3"
    room_id = http(port, "POST", f"{client}/createRoom", {"name": "Kept"}, token)[1]["room_id"]
    status, _ = http(
        port, "PUT", f"{client}/rooms/{room_id}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "remember me"}, token,
    )  # fmt: skip
    assert status == 200
    status, uploaded = http(port, "POST", "/_matrix/media/v3/upload", token=token, data=MEDIA)
    assert status == 200, uploaded
    return {"room_id": room_id, "mxc": uploaded["content_uri"], "key": server_key(port)}


def check_restored(port: int, before: dict[str, Any]) -> None:
    status, session = login(port)
    assert status == 200, session
    token = session["access_token"]
    room_id = before["room_id"]
    status, page = http(
        port, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20", token=token
    )
    assert status == 200, page
    assert "remember me" in [e["content"].get("body") for e in page["chunk"]]
    server_name, media_id = before["mxc"].removeprefix("mxc://").split("/")
    status, content = http(
        port, "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}", token=token
    )
    assert (status, content) == (200, MEDIA)
    assert server_key(port) == before["key"]


def round_trip(source: tuple[Path, dict[str, str]], target: tuple[Path, dict[str, str]]) -> None:
    backup_dir = source[0].parent / "backup"
    port = free_port()
    server = Server(source[0], port, env=source[1])
    try:
        server.wait_ready(START_BUDGET_FIRST)
        before = populate(port, *source)
        result = cli("backup", str(backup_dir), "--data-dir", str(source[0]), env=source[1])
        assert result.returncode == 0, result.stderr
    finally:
        assert server.stop() == 0
    result = cli("restore", str(backup_dir), "--data-dir", str(target[0]), env=target[1])
    assert result.returncode == 0, result.stderr
    port = free_port()
    server = Server(target[0], port, env=target[1])
    try:
        server.wait_ready(START_BUDGET_FIRST)
        check_restored(port, before)
        refused = cli("restore", str(backup_dir), "--data-dir", str(target[0]), env=target[1])
        assert refused.returncode == 1 and "stop the server" in refused.stderr
    finally:
        assert server.stop() == 0


def test_round_trip_on_external_postgres(tmp_path: Path, postgres: PostgresServer) -> None:
    round_trip(
        (tmp_path / "a", clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())),
        (tmp_path / "b", clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())),
    )


def test_round_trip_on_embedded_postgres() -> None:
    # Outside pytest's temporary folder, which PostgreSQL's own account may not reach.
    root = Path(tempfile.mkdtemp(prefix="hs-backup-"))
    try:
        round_trip((root / "a", clean_env()), (root / "b", clean_env()))
    finally:
        for data in (root / "a", root / "b"):
            for pid in postgres_processes(data / "postgres"):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
