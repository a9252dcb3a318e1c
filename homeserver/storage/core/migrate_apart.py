"""Bringing the schema up to date in a child process.

alembic, SQLAlchemy and mako, with the migration scripts alembic loads, take about
20 MiB of a Python process and are of no use once the schema is current: the server
runs the upgrade (`homeserver.storage.core.migrations`) in a child, which hands that
memory back when it exits, and never imports them itself. A database already at the
head revision (every start but the first after an upgrade) needs no child at all:
the head is read from the scripts' `revision`/`down_revision` lines, the database's
revision from `alembic_version`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

import homeserver
import schema

_REVISION_LINE = re.compile(r'^(revision|down_revision)\s*(?::[^=]*)?=\s*["\']([^"\']+)["\']', re.M)


class MigrationError(Exception):
    """The schema could not be brought up to date; the message is one line."""


def head_revision() -> str | None:
    """The one revision no script revises, or None when that is not clear-cut."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (Path(schema.__file__).parent / "versions").glob("*.py"):
        for key, value in _REVISION_LINE.findall(script.read_text()):
            (revisions if key == "revision" else revised).add(value)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def current_revision(conninfo: str) -> str | None:
    """The database's revision; None when it has none yet."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def upgrade(conninfo: str) -> None:
    """Bring the database at `conninfo` up to the head revision, in a child process
    unless it is there already."""
    head = head_revision()
    try:
        current = current_revision(conninfo)
    except psycopg.Error as exc:
        raise MigrationError(str(exc).strip().split("\n")[0]) from exc
    if head is None or current != head:
        upgrade_apart(conninfo)


def upgrade_apart(conninfo: str) -> None:
    """Bring the database at `conninfo` up to the head revision, in a child process.

    The conninfo (it may hold a password) goes through the child's stdin, not its
    command line; a failure's one-line message comes back on its stderr."""
    root = str(Path(homeserver.__file__).resolve().parents[1])  # homeserver/ and schema/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "homeserver.storage.core.migrations"],
        input=conninfo.encode(),
        capture_output=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise MigrationError(lines[-1] if lines else f"exit status {result.returncode}")
