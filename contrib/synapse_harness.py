"""Synapse as a federation peer on loopback, for interop tests and by hand.

    python contrib/synapse_harness.py install
    python contrib/synapse_harness.py start WORKDIR FED_PORT CLIENT_PORT   # Ctrl-C stops it

Installs Synapse (pinned to the release we test against) into a virtualenv of its own,
cached in ~/.cache/homeserver-interop/venv (override with HOMESERVER_INTEROP_VENV), then
runs instances named "localhost:FED_PORT": TLS with a self-signed certificate on the
federation port, plain HTTP for clients, SQLite, no trusted key servers (keys are fetched
from the peers themselves), loopback allowed as a federation target, rate limits out of
the way. `SynapseInstance` does the same from Python.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from federation.keys import (
    SigningKey,
    generate_signing_key,
    read_signing_keys,
    write_signing_keys,
)

SYNAPSE_SPEC = "matrix-synapse>=1.163,<1.164"
# The interop tests run Synapse on SQLite; the benchmarks run it on PostgreSQL, which
# needs psycopg2 (the binary wheel: Synapse's [postgres] extra builds it from source).
SYNAPSE_PACKAGES = (SYNAPSE_SPEC, "psycopg2-binary>=2.9,<3")
DEFAULT_VENV = Path.home() / ".cache" / "homeserver-interop" / "venv"
START_TIMEOUT = 90.0
UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}


def venv_dir() -> Path:
    return Path(os.environ.get("HOMESERVER_INTEROP_VENV", DEFAULT_VENV))


def ensure_synapse(venv: Path | None = None) -> Path:
    """The Python of a virtualenv with Synapse installed; installs it on first use."""
    venv = venv or venv_dir()
    python = venv / "bin" / "python"
    stamp = venv / ".synapse-spec"
    wanted = " ".join(SYNAPSE_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *SYNAPSE_PACKAGES,
        ],
        check=True,
    )
    subprocess.run([str(python), "-c", "import synapse, psycopg2"], check=True)
    stamp.write_text(wanted)
    return python


def make_self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed EC certificate for `name` and 127.0.0.1: (cert, key) paths."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-sha256",
                "-days",
                "3650",
                "-subj",
                f"/CN={name}",
                "-addext",
                f"subjectAltName=DNS:{name},IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


class SynapseInstance:
    """One Synapse process with its state in `workdir`."""

    def __init__(self, workdir: Path, fed_port: int, client_port: int) -> None:
        self.workdir = workdir
        self.fed_port = fed_port
        self.client_port = client_port
        self.server_name = f"localhost:{fed_port}"
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.signing_key: SigningKey | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_path = self.workdir / "signing.key"
        if not key_path.exists():
            key_path.write_text(write_signing_keys([generate_signing_key()]))
        self.signing_key = read_signing_keys(key_path.read_text())[0]
        cert, key = make_self_signed_cert(self.workdir)
        log_config = self.workdir / "log.yaml"
        log_config.write_text(yaml.safe_dump(_log_config(self.workdir / "homeserver.log")))
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.client_url + "/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "report_stats": False,
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
                {
                    "port": self.fed_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "federation_verify_certificates": False,
            # 1.163 reads only these spellings; the default list blocks loopback.
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "trusted_key_servers": [],
            # Off by default in Synapse (nobody may publish, nobody may browse over
            # federation); the interop tests publish rooms and browse its directory.
            "allow_public_rooms_over_federation": True,
            "room_list_publication_rules": [{"action": "allow"}],
            "suppress_key_server_warning": True,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": "interop-secret",
            "macaroon_secret_key": "interop-macaroon",
            "form_secret": "interop-form",
            "signing_key_path": str(key_path),
            "log_config": str(log_config),
            "media_store_path": str(self.workdir / "media"),
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "db.sqlite")}},
            "presence": {"enabled": False},
            "rc_message": UNLIMITED,
            "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
            "rc_joins_per_room": UNLIMITED,
            "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
            "rc_room_creation": UNLIMITED,
            "rc_key_requests": UNLIMITED,
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 1_000_000,
                "sleep_delay": 1,
                "reject_limit": 1_000_000,
                "concurrent": 1000,
            },
        }
        path = self.workdir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, python: Path | None = None, timeout: float = START_TIMEOUT) -> None:
        """Start Synapse and wait until its client API answers."""
        python = python or ensure_synapse()
        config = self.write_config()
        out = open(self.workdir / "stdout.log", "ab")  # the child holds it open
        self._process = subprocess.Popen(
            [str(python), "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=self.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                tail = (self.workdir / "stdout.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Synapse exited during startup:\n{tail}")
            try:
                with urllib.request.urlopen(
                    f"{self.client_url}/_matrix/client/versions", timeout=2
                ):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Synapse did not answer within {timeout:g} s")
            time.sleep(0.25)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def _log_config(path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(path),
                "encoding": "utf8",
            },
        },
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install Synapse into the cached virtualenv")
    start = sub.add_parser("start", help="run one instance until interrupted")
    start.add_argument("workdir", type=Path)
    start.add_argument("fed_port", type=int)
    start.add_argument("client_port", type=int)
    args = parser.parse_args(argv)
    python = ensure_synapse()
    if args.command == "install":
        print(f"Synapse is installed for {python}")
        return 0
    instance = SynapseInstance(args.workdir.absolute(), args.fed_port, args.client_port)
    instance.start(python)
    print(
        f"{instance.server_name}: federation https://127.0.0.1:{args.fed_port}, "
        f"clients {instance.client_url}; Ctrl-C stops it"
    )
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        instance.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
