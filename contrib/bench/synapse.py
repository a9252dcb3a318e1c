"""Start and stop a Synapse on loopback for side-by-side benchmarks.

Synapse comes from a virtualenv made by the shared install script (PyPI
`matrix-synapse`); this module only writes its config, starts it with a client
listener on 127.0.0.1, waits until it answers, and stops it. Rate limits are
lifted so that the benchmark measures work, not throttling.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from signedjson.key import generate_signing_key, write_signing_keys

DEFAULT_VENV = Path("/tmp/synapse-work/venv")
_UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}
_RATE_LIMITS = (
    "rc_message",
    "rc_registration",
    "rc_registration_token_validity",
    "rc_room_creation",
    "rc_joins_per_room",
    "rc_3pid_validation",
    "rc_profile",
)


@dataclass
class Synapse:
    """One Synapse instance in `workdir`, on a PostgreSQL database."""

    workdir: Path
    port: int
    database: dict[str, Any]  # psycopg2 args: host, port, user, dbname
    bcrypt_rounds: int = 12
    venv: Path = DEFAULT_VENV
    server_name: str = "localhost"
    extra: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media_store").mkdir(exist_ok=True)
        key_path = self.workdir / "signing.key"
        if not key_path.exists():
            with open(key_path, "w") as f:
                write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
        log_config = self.workdir / "log.config"
        log_config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(message)s"}},
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "formatter": "plain",
                            "filename": str(self.workdir / "homeserver.log"),
                        }
                    },
                    "root": {"level": "WARNING", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "report_stats": False,
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "psycopg2",
                "args": {**self.database, "cp_min": 5, "cp_max": 10},
            },
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "bcrypt_rounds": self.bcrypt_rounds,
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "registration_shared_secret": secrets.token_urlsafe(32),
            "signing_key_path": str(key_path),
            "log_config": str(log_config),
            "media_store_path": str(self.workdir / "media_store"),
            "presence": {"enabled": False},
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            **{name: _UNLIMITED for name in _RATE_LIMITS},
            **self.extra,
        }
        path = self.workdir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = 120.0) -> None:
        config = self.write_config()
        log = open(self.workdir / "stdout.log", "ab")
        self.process = subprocess.Popen(
            [str(self.python), "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        wait_ready(self.base_url, self.process, timeout, self.workdir / "stdout.log")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Until /_matrix/client/versions answers; fail with the log's tail if it dies."""
    deadline = time.monotonic() + timeout
    url = base_url + "/_matrix/client/versions"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"server for {base_url} exited at start:\n" + "\n".join(tail))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{base_url} not answering after {timeout}s")


def bcrypt_cost(venv: Path, rounds: int, samples: int = 7) -> float:
    """CPU seconds of one bcrypt check at `rounds`, measured in Synapse's own Python
    (the least of several: other load on the machine only ever adds)."""
    script = (
        "import bcrypt, sys, time\n"
        "rounds, samples = int(sys.argv[1]), int(sys.argv[2])\n"
        "hashed = bcrypt.hashpw(b'password', bcrypt.gensalt(rounds))\n"
        "costs = []\n"
        "for _ in range(samples):\n"
        "    start = time.process_time()\n"
        "    bcrypt.checkpw(b'password', hashed)\n"
        "    costs.append(time.process_time() - start)\n"
        "print(min(costs))\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, str(rounds), str(samples)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())
