"""Database dumps for backups: pg_dump and pg_restore, from the machine when its tools
are at least as new as the server, else from the embedded PostgreSQL wheel (which ships
a recent release). A dump is PostgreSQL's custom format: one consistent snapshot, taken
while the server keeps running."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg

from homeserver.storage.core.embedded_postgres import EmbeddedPostgresError, bin_dir


class DumpError(Exception):
    """pg_dump or pg_restore failed, or no usable one was found."""


def server_major(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000 if row else 0


def _tool_major(path: str) -> int:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def tool(name: str, conninfo: str) -> str:
    """The `name` binary to use against this server: new enough to read or write it."""
    wanted = server_major(conninfo)
    candidates = []
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    try:
        candidates.append(str(bin_dir() / name))
    except EmbeddedPostgresError:
        pass
    for candidate in candidates:
        if _tool_major(candidate) >= wanted:
            return candidate
    raise DumpError(f"no {name} of PostgreSQL {wanted} or newer was found")


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise DumpError(f"{Path(args[0]).name} failed: {lines[-1] if lines else result.returncode}")


def dump(conninfo: str, target: Path) -> None:
    _run(
        [
            tool("pg_dump", conninfo),
            "--format=custom",
            "--no-owner",
            "-f",
            str(target),
            "-d",
            conninfo,
        ]
    )


def restore(conninfo: str, source: Path) -> None:
    """Replace what the database holds with the dump (its objects dropped first)."""
    _run(
        [
            tool("pg_restore", conninfo),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "-d",
            conninfo,
            str(source),
        ]
    )
