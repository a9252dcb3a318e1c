"""A cluster as an operator runs it: nginx from the Debian package in front, several
`homeserver run` processes behind it on one PostgreSQL database, one signing key and one
media directory (`signing_key_path` and `media_store_path`; each process has its own data
directory: its lock, its log)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.integration.test_process import Server, clean_env, free_port

START_BUDGET_S = 40.0


def debian_binary(name: str, package: str) -> str:
    """A program from a Debian package, installed when missing (so a clean CI machine
    runs these tests too)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}",) if Path(p).exists()), None
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{name} is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which(name) or f"/usr/sbin/{name}"


def nginx_binary() -> str:
    return debian_binary("nginx", "nginx")


def nginx_config(root: Path, listen: int, upstreams: list[int]) -> str:
    """The essentials of contrib/deploy/nginx.conf on plain HTTP: any request to any
    process, a failed connection tried on the next one, long-polls held long enough."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in upstreams
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream homeserver {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{listen};
        client_max_body_size 50m;
        location / {{
            proxy_pass http://homeserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 150s;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, root: Path, upstreams: list[int]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = root / "nginx.conf"
        conf.write_text(nginx_config(root, self.port, upstreams))
        self.log = root / "error.log"
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(root), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class Cluster:
    """`size` processes behind nginx; `kill(i)` and `start(i)` take one down and up."""

    def __init__(self, root: Path, database_url: str, size: int, **settings: Any) -> None:
        self.root = root
        media = root / "media"
        media.mkdir(parents=True)
        self.config: dict[str, Any] = {
            "server_name": "localhost",
            "database": {"url": database_url},
            "open_registration": True,
            "presence": {"enabled": False},
            "x_forwarded": True,
            # The processes start together and agree on one key, which none has yet.
            "signing_key_path": str(root / "signing.key"),
            "media_store_path": str(media),
            **settings,
        }
        self.ports = [free_port() for _ in range(size)]
        self.data_dirs = [root / f"hs{i}" for i in range(size)]
        for data_dir in self.data_dirs:
            data_dir.mkdir()
            (data_dir / "homeserver.yaml").write_text(yaml.safe_dump(self.config))
        self.servers: list[Server | None] = [None] * size
        self.nginx = Nginx(root / "nginx", self.ports)
        self.url = self.nginx.url
        for i in range(size):
            self._launch(i)
        self.wait_ready(range(size))

    def _launch(self, i: int) -> None:
        self.servers[i] = Server(self.data_dirs[i], self.ports[i], env=clean_env())

    def base(self, i: int) -> str:
        """Process i directly, bypassing the load balancer."""
        return f"http://127.0.0.1:{self.ports[i]}"

    def wait_ready(self, which: Any, budget: float = START_BUDGET_S) -> None:
        deadline = time.monotonic() + budget
        pending = set(which)
        while pending:
            for i in list(pending):
                server = self.servers[i]
                assert server is not None
                if server.process.poll() is not None:
                    raise AssertionError(f"process {i} exited:\n{server.log.read_text()}")
                if ready(self.ports[i]):
                    pending.discard(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {sorted(pending)} not ready in {budget}s")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        server = self.servers[i]
        assert server is not None
        server.process.kill()
        server.process.wait()
        server.log_file.close()
        self.servers[i] = None

    def start(self, i: int) -> None:
        self._launch(i)
        self.wait_ready([i])

    def logs(self) -> str:
        return "\n".join(f"--- hs{i}\n{s.log.read_text()}" for i, s in enumerate(self.servers) if s)

    def stop(self) -> list[int]:
        """SIGTERM every process (a clean drain); their exit codes."""
        codes = []
        for server in self.servers:
            if server is not None:
                codes.append(server.stop())
        self.nginx.stop()
        return codes
