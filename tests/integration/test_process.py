"""`homeserver` as a user runs it: a real process, a real data directory, real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrib.synapse_harness import make_self_signed_cert
from homeserver.storage.core.embedded_postgres import read_postmaster_pid
from tests.conftest import PostgresServer

START_BUDGET_FIRST = 20.0
START_BUDGET_LATER = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def homeserver(*args: str) -> list[str]:
    return [sys.executable, "-m", "homeserver", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a `homeserver` command to completion."""
    return subprocess.run(
        homeserver(*args), capture_output=True, text=True, env=env or clean_env(), timeout=120
    )


class Server:
    """`homeserver run` in the background, its output in a log file."""

    def __init__(self, data_dir: Path, port: int, *extra: str, env: dict[str, str] | None = None):
        self.port = port
        self.log = data_dir.parent / f"{data_dir.name}-{port}.log"
        self.log_file = open(self.log, "ab")
        self.process = subprocess.Popen(
            homeserver("run", "--data-dir", str(data_dir), "--port", str(port), *extra),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=env or clean_env(),
        )

    def wait_ready(self, budget: float) -> float:
        start = time.monotonic()
        url = f"http://127.0.0.1:{self.port}/_matrix/client/versions"
        while time.monotonic() - start < budget:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"not serving after {budget}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(30)
        self.log_file.close()
        return code


def postgres_processes(pgdata: Path) -> list[int]:
    """Pids of postgres processes whose command line names this data directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(pgdata: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not postgres_processes(pgdata):
            return []
        time.sleep(0.1)
    return postgres_processes(pgdata)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory for an embedded PostgreSQL, outside pytest's temporary folder:
    each pytest run as root (other checkouts' too) makes /tmp/pytest-of-root private
    again, and PostgreSQL, running as another account, could then not reach its data."""
    root = Path(tempfile.mkdtemp(prefix="hs-process-"))
    path = root / "data"
    yield path
    for pid in postgres_processes(path / "postgres"):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def test_embedded_first_run_restart_and_clean_stop(data_dir: Path) -> None:
    port = free_port()
    server = Server(data_dir, port)
    first = server.wait_ready(START_BUDGET_FIRST)
    assert (data_dir / "homeserver.yaml").is_file()
    assert (data_dir / "signing.key").is_file()
    assert (data_dir / "media").is_dir()
    assert (data_dir / "postgres" / "PG_VERSION").is_file()
    assert postgres_processes(data_dir / "postgres"), "embedded postgres should be running"
    key_before = (data_dir / "signing.key").read_text()

    # A second server on the same data directory refuses to start, clearly.
    second = cli("run", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr

    assert server.stop() == 0
    assert wait_gone(data_dir / "postgres") == []
    assert read_postmaster_pid(data_dir / "postgres") is None

    server = Server(data_dir, port)
    later = server.wait_ready(START_BUDGET_LATER)
    assert (data_dir / "signing.key").read_text() == key_before
    assert server.stop(signal.SIGINT) == 0
    assert wait_gone(data_dir / "postgres") == []
    print(f"first start {first:.2f}s, later start {later:.2f}s")


def test_killed_server_leaves_no_postgres_and_next_start_recovers(data_dir: Path) -> None:
    port = free_port()
    server = Server(data_dir, port)
    server.wait_ready(START_BUDGET_FIRST)
    server.stop(signal.SIGKILL)
    assert wait_gone(data_dir / "postgres") == []

    server = Server(data_dir, port)
    server.wait_ready(START_BUDGET_LATER * 2)
    assert server.stop() == 0
    assert wait_gone(data_dir / "postgres") == []


def test_register_while_stopped_and_while_running(data_dir: Path) -> None:
    result = cli("register", "alice", "--password", "pw1", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "@alice:localhost" in result.stdout
    assert wait_gone(data_dir / "postgres") == []

    server = Server(data_dir, free_port())
    server.wait_ready(START_BUDGET_LATER * 2)
    try:
        result = cli("register", "bob", "--password", "pw2", "--admin", "--data-dir", str(data_dir))
        assert result.returncode == 0, result.stderr
        # The account created while stopped is still there: taking the name again fails.
        result = cli("register", "alice", "--password", "x", "--data-dir", str(data_dir))
        assert result.returncode == 1
        assert "M_USER_IN_USE" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        assert server.stop() == 0


def test_external_database_keeps_users_across_restarts(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    data_dir = tmp_path / "ext"
    env = clean_env(HOMESERVER_DATABASE_URL=url)
    port = free_port()
    server = Server(data_dir, port, env=env)
    server.wait_ready(START_BUDGET_FIRST)
    assert not (data_dir / "postgres").exists(), "no embedded cluster with an external URL"
    result = cli("register", "carol", "--password", "pw", "--data-dir", str(data_dir), env=env)
    assert result.returncode == 0, result.stderr
    assert server.stop() == 0

    server = Server(data_dir, port, "--database-url", url)
    server.wait_ready(START_BUDGET_LATER)
    result = cli(
        "register", "carol", "--password", "pw", "--data-dir", str(data_dir), "--database-url", url
    )
    assert server.stop() == 0
    assert result.returncode == 1
    assert "M_USER_IN_USE" in result.stderr


@pytest.mark.parametrize(
    ("config_text", "flags", "message"),
    [
        ("server_name: localhost\nno_such_setting: 1\n", [], "unknown setting 'no_such_setting'"),
        ("port: eighty\n", [], "port must be int"),
        ("log_format: xml\n", [], "log_format must be text or json"),
        ("database:\n  url: 5\n", [], "database.url is not a PostgreSQL URL"),
        ("server_name: 'bad name!'\n", [], "not a valid server name"),
        ("port: [1\n", [], "not valid YAML"),
        (
            "",
            ["--database-url", "postgresql://nobody@127.0.0.1:1/none"],
            "cannot connect to the database",
        ),
        ("", ["--tls-port", "8448"], "tls_port needs tls_cert and tls_key"),
    ],
)
def test_bad_config_is_one_line_error(
    tmp_path: Path, config_text: str, flags: list[str], message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    data = str(tmp_path / "d")
    result = cli(
        "run", "--config", str(config), "--data-dir", data, "--port", str(free_port()), *flags
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeserver: error:")
    assert message in lines[0]


def test_environment_variable_sets_a_setting(tmp_path: Path) -> None:
    env = clean_env(HOMESERVER_PORT="not-a-port")
    result = cli("run", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode != 0
    assert "HOMESERVER_PORT: port must be int" in result.stderr


def test_tls_listener_serves_the_same_api(data_dir: Path, tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    tls_port = free_port()
    server = Server(
        data_dir,
        free_port(),
        "--tls-port",
        str(tls_port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        server.wait_ready(START_BUDGET_FIRST)
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        url = f"https://127.0.0.1:{tls_port}/_matrix/key/v2/server"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body = json.loads(response.read())
        assert body["server_name"] == "localhost"
    finally:
        assert server.stop() == 0


def test_json_logs_are_one_object_per_line(tmp_path: Path, postgres: PostgresServer) -> None:
    """`log_format: json`: every line a collector reads is a JSON object, and a request's
    records carry its id."""
    url = postgres.create_database()
    port = free_port()
    env = clean_env(HOMESERVER_DATABASE_URL=url, HOMESERVER_LOG_FORMAT="json")
    server = Server(tmp_path / "json", port, env=env)
    server.wait_ready(START_BUDGET_FIRST)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions") as response:
        assert response.status == 200
    assert server.stop() == 0
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line]
    assert records and all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "homeserver.access"]
    assert any("/_matrix/client/versions 200" in r["message"] for r in access)
    ids = [r["request_id"] for r in access]
    assert all(i.startswith("GET-") for i in ids) and len(set(ids)) == len(ids)
    assert all("request_id" not in r for r in records if r["logger"] != "homeserver.access")
