"""The configurations shipped in contrib/deploy/ are accepted by the programs they are
for, as an operator installs them (names and certificates replaced)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from contrib.synapse_harness import make_self_signed_cert
from tests.cluster.harness import debian_binary

DEPLOY = Path(__file__).parents[2] / "contrib" / "deploy"


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    site = (DEPLOY / "nginx.conf").read_text()
    site = re.sub(r"/etc/letsencrypt/live/[^/]+/fullchain\.pem", str(cert), site)
    site = re.sub(r"/etc/letsencrypt/live/[^/]+/privkey\.pem", str(key), site)
    (tmp_path / "site.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n    include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        [debian_binary("nginx", "nginx"), "-t", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    pem = tmp_path / "both.pem"
    pem.write_text(cert.read_text() + key.read_text())
    config = (DEPLOY / "haproxy.cfg").read_text()
    config = config.replace("/etc/haproxy/certs/matrix.example.org.pem", str(pem))
    (tmp_path / "haproxy.cfg").write_text(config)
    result = subprocess.run(
        [debian_binary("haproxy", "haproxy"), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
